"""Two workers, a real Prometheus and a real Alertmanager: what the on-call engineer gets.

Two workers share one consumer group on the embedded broker; Debian's ``prometheus`` scrapes
both every second and evaluates ``deploy/prometheus/alerts.yml`` every second, sending to
Debian's ``prometheus-alertmanager``, which runs the route and receivers of
``deploy/alertmanager/alertmanager.yml`` with the receivers' webhooks pointed at an HTTP
server of this test. The rules are the shipped ones except the ``for:`` of the two dead-letter
alerts the test waits for, cut to 1 s in the test's copy (every expression, window and
threshold is unchanged), and the route's grouping waits, cut to 1 s.

In order: with clean traffic every dashboard query, alert and recording rule has data; a
burst of garbage makes the dead-letter alert reach the webhook; after the second worker
leaves (SIGTERM) the survivor owns every partition and the lag reads 0 within a minute (the
survivor had applied records on the partitions it gets back, before the second worker took
them and applied more there: the case where a lag computed from what the worker remembers
handling read thousands of messages on an idle stream).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from limitstream.worker_process import WorkerProcess
from streams.broker import EmbeddedBroker, free_port, terminate
from streams.kafka_io import LogRecord
from tests.e2e.helpers import publish_phase, simulated_phases, wait_assignment
from tests.e2e.test_prometheus_scrape import (
    Prometheus,
    PrometheusError,
    eventually,
    expressions,
    selectors,
)
from tests.group_timings import GROUP_TIMINGS
from tests.unit.test_deploy_grafana import dashboard_expressions

pytestmark = [pytest.mark.broker, pytest.mark.promtool]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ROUTES = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PARTITIONS = 4
#: Garbage records published at once on transactions: far over the alert's 1 % of the clean
#: traffic's 508 transactions, and over its floor of 10 dead letters.
GARBAGE = 100
#: The alerts the burst of garbage must deliver, by receiver path of the shipped route.
DELIVERED = {"LimitstreamDeadLetterRate": "/tickets", "LimitstreamDeadLetterSLOFastBurn": "/oncall"}
#: The alerts that clean traffic on two healthy workers must not raise.
STREAM_ALERTS = frozenset({
    "LimitstreamConsumerLagGrowing", "LimitstreamDeadLetterRate", "LimitstreamAgentErrors",
    "LimitstreamWorkerNotReady", "LimitstreamTargetAbsent", "LimitstreamPartitionsUnassigned",
    "LimitstreamUnownedPartitionLag", "LimitstreamConsumerTimeLagHigh",
    "LimitstreamCommitStalled", "LimitstreamRebalanceStorm", "LimitstreamDeadLetterSLOFastBurn",
    "LimitstreamDeadLetterSLOSlowBurn",
})
#: The population gauges and lag are refreshed every 10 s (agents.worker.GAUGE_INTERVAL_S);
#: a rule result needs a scrape and an evaluation after that.
SETTLE_S = 30.0


# -- the webhook receiver and Alertmanager -----------------------------------------------------


@dataclass
class Webhook:
    """An HTTP server that keeps every notification Alertmanager posts, by path."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls) -> Webhook:
        hook: Webhook

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reports what it received

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        hook = cls(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return hook

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def firing(self) -> set[tuple[str, str]]:
        """(path, alert name) of every firing alert notified so far."""
        with self.lock:
            return {(path, alert["labels"]["alertname"]) for path, body in self.received
                    for alert in body["alerts"] if alert["status"] == "firing"}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(hook: Webhook) -> dict[str, Any]:
    """The shipped route and inhibitions; receivers' webhooks sent to ``hook`` on the same
    paths; grouping waits of 1 s."""
    config: dict[str, Any] = yaml.safe_load(ROUTES.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            path = urllib.parse.urlsplit(webhook["url"]).path
            webhook["url"] = hook.url + path
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


@dataclass
class Alertmanager:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, config: dict[str, Any]) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail("Alertmanager is not installed: run `make promtool` (Debian's "
                        "`prometheus-alertmanager` package)", pytrace=False)
        path = workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        log_path = workdir / "alertmanager.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [binary, f"--config.file={path}", f"--storage.path={workdir / 'am-data'}",
                 f"--web.listen-address=127.0.0.1:{port}",
                 "--cluster.listen-address=",  # no gossip port: a single instance
                 "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        am = cls(process, port, log_path)
        eventually(am.healthy, bool, 30.0, "Alertmanager to answer /-/ready")
        return am

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"alertmanager exited with {self.process.returncode}:\n"
                               + self.log_path.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        terminate(self.process, 10)


def rules_for_the_test(workdir: Path) -> Path:
    """alerts.yml with the ``for:`` of the alerts the test waits for (``DELIVERED``) cut to
    1 s, nothing else changed. (Cut everywhere, a rebalance's few seconds of unassigned
    partitions fired LimitstreamPartitionsUnassigned, whose 5 minutes are there for that.)"""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in DELIVERED:
                rule["for"] = "1s"
    path = workdir / "alerts.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    prom: Prometheus
    hook: Webhook
    workers: list[WorkerProcess]
    env: dict[str, str]
    produced: Counter[str]


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerting")
    tag = uuid.uuid4().hex[:8]
    env = {
        "LIMITSTREAM_BROKER": broker.url,
        "LIMITSTREAM_TOPIC_PREFIX": f"alerting-{tag}-",
        "LIMITSTREAM_APP_ID": f"limitstream-alerting-{tag}",
        "LIMITSTREAM_PARTITIONS": str(PARTITIONS),
        "LIMITSTREAM_LOG_LEVEL": "warning",
        "LIMITSTREAM_MODEL_HMAC_KEY": "test-only-hmac-key",
        **GROUP_TIMINGS,
    }
    workers: list[WorkerProcess] = []
    prom: Prometheus | None = None
    am: Alertmanager | None = None
    hook = Webhook.start()

    def start_worker() -> None:
        i = len(workers)
        workers.append(WorkerProcess.start(
            {**env, "LIMITSTREAM_DATA_DIR": str(tmp / f"data-{i}")}, free_port(),
            tmp / f"worker-{i}.log"))
        wait_assignment(workers, PARTITIONS, timeout=90)

    try:
        opened, spending, repaying = simulated_phases(20, 30, max_phases=3)
        # The first worker alone applies the accounts and half of the users' spending, on
        # every partition; the second then takes half the partitions and applies the rest
        # there. When it leaves, the first gets back partitions it applied records of before
        # (issue 18's phantom lag: its old offsets there were taken for the current ones).
        half = {rec.key for rec in spending[: len(spending) // 2]}
        produced: Counter[str] = Counter()
        start_worker()
        publish_phase(env, opened, produced)
        publish_phase(env, [r for r in spending if r.key in half], produced)
        am = Alertmanager.start(tmp, alertmanager_config(hook))
        start_worker()
        prom = Prometheus.start(tmp, [f"127.0.0.1:{w.web_port}" for w in workers],
                                [rules_for_the_test(tmp)], alertmanager=f"127.0.0.1:{am.port}")
        eventually(lambda: up(prom), lambda v: len(v) == 2 and set(v.values()) == {1.0},
                   30.0, "both workers scraped")
        publish_phase(env, [r for r in spending if r.key not in half], produced)
        publish_phase(env, repaying, produced)
        yield Stack(prom, hook, workers, env, produced)
    finally:
        if prom is not None:
            prom.stop()
        if am is not None:
            am.stop()
        hook.stop()
        for w in workers:
            w.stop(timeout=15)


def up(prom: Prometheus) -> dict[tuple[str, ...], float]:
    """The worker targets' ``up`` by instance ({} while Prometheus is still starting)."""
    with contextlib.suppress(OSError, PrometheusError):
        return prom.values('up{job="limitstream"}', "instance")
    return {}


def queried(prom: Prometheus, promql: str) -> bool:
    return bool(prom.query(promql))


# -- the tests -----------------------------------------------------------------------------------


def test_with_clean_traffic_every_panel_alert_and_recording_rule_has_data(stack: Stack) -> None:
    prom = stack.prom
    # A refresh of both workers' 10 s gauges after the traffic.
    eventually(lambda: prom.value("sum(limitstream_table_users)"), lambda v: v == 20.0,
               SETTLE_S, "the two workers to hold the 20 users between them, once each")
    empty = [
        (title, promql) for title, expr in dashboard_expressions()
        if not queried(prom, promql := expr.replace("$__rate_interval", "1m")
                       .replace("$instance", ".*"))
    ]
    assert not empty, f"panels with no data on two healthy workers: {empty}"
    selected = {sel: where for where, expr in expressions() for sel in selectors(expr)}
    assert "limitstream:dead_letter_slo_errors:ratio_rate1h" in selected
    assert 'limitstream_decision_latency_seconds_bucket{le="0.25"}' in selected
    unselected = {sel: where for sel, where in selected.items() if not queried(prom, sel)}
    assert not unselected, f"rule selectors with no series on two healthy workers: {unselected}"

    groups = eventually(lambda: prom.api("rules")["groups"],
                        lambda gs: all(r["health"] == "ok" for g in gs for r in g["rules"]),
                        10.0, "every rule evaluated without error")
    shipped = yaml.safe_load(ALERTS.read_text())["groups"]
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in shipped)
    # Both workers own partitions; together every one of every input topic.
    assigned = prom.values("sum by (topic) (limitstream_assigned_partitions)", "topic")
    assert len(assigned) == 5 and set(assigned.values()) == {float(PARTITIONS)}, assigned
    # Every record committed (the fixture waited for the group's commits): no lag, once the
    # 10 s gauges have been refreshed after the last commit.
    eventually(lambda: prom.values("limitstream_consumer_lag > 0", "topic", "partition"),
               lambda v: not v, SETTLE_S, "no lag after the traffic")
    # The process collectors are on the workers' registries.
    assert len(prom.query("process_resident_memory_bytes")) == 2
    # No stream alert fires on clean traffic (with the dead-letter ones' `for:` at 1 s).
    firing = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]
              if a["state"] == "firing"}
    assert firing.isdisjoint(STREAM_ALERTS), firing


def test_a_burst_of_garbage_reaches_the_webhook_as_the_dead_letter_alert(stack: Stack) -> None:
    garbage = [LogRecord("transactions", f"g{i}".encode(), b"{not json")
               for i in range(GARBAGE)]
    publish_phase(stack.env, garbage, stack.produced)
    prom = stack.prom
    eventually(lambda: prom.value(
        'sum(limitstream_dead_letters_total{topic="transactions",reason="malformed_json"})'),
        lambda v: v == GARBAGE, SETTLE_S, "every garbage record counted as a dead letter")
    # A warning: the shipped route sends it to the `tickets` receiver; the dead-letter SLO's
    # fast burn (critical) pages through the `oncall` one.
    expected = {(path, name) for name, path in DELIVERED.items()}
    eventually(stack.hook.firing, expected.issubset, 60.0,
               "the dead-letter alert and page at the webhook")


def test_after_a_worker_leaves_the_survivor_owns_everything_and_the_lag_reads_zero(
        stack: Stack) -> None:
    prom = stack.prom
    survivor, leaver = stack.workers
    leaver.stop(timeout=30)
    left = time.monotonic()
    instance = f"127.0.0.1:{survivor.web_port}"

    def view() -> tuple[dict[tuple[str, ...], float], float | None, float | None]:
        return (prom.values("sum by (topic) (limitstream_assigned_partitions)", "topic"),
                prom.value("sum(limitstream_consumer_lag)"),
                prom.value(f'count(limitstream_consumer_lag{{instance="{instance}"}})'))

    def settled(v: tuple[dict[tuple[str, ...], float], float | None, float | None]) -> bool:
        assigned, lag, owned = v
        return (len(assigned) == 5 and set(assigned.values()) == {float(PARTITIONS)}
                and lag == 0 and owned == 5 * PARTITIONS)

    eventually(view, settled, 60.0, "the survivor to own every partition with zero lag")
    waited = time.monotonic() - left
    print(f"after the second worker stopped, the survivor read zero lag in {waited:.1f} s")
    # The group's lag of every partition, as the broker has it, agrees.
    assert prom.value("max(limitstream_group_lag)") == 0
    assert prom.value("sum(limitstream_consumer_lag_seconds)") == 0
    assert waited < 60.0
