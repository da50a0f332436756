"""A real Prometheus scrapes a real worker: the series the SREs' Prometheus will see.

One worker on the embedded broker and one ``prometheus`` server (Debian's package, as in
production) are shared by the tests of this module. Prometheus scrapes the worker's ``/metrics``
every second, with ``deploy/prometheus/alerts.yml`` loaded. A small known log goes through the
worker: a few users opened, purchases, an upstream duplicate, a mis-keyed record, a bad record,
installments due, paid and overdue (delayed labels, a model snapshot), and a snapshot signed
with the wrong key. Everything is then read back through Prometheus's HTTP API only.

The expected decision counts come from the pure core (the processor the worker runs) over the
same log, so a policy change does not break this test; the input counts are the log's own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from agents.metrics import ACTIONS, FALLBACK_REASONS
from limitstream.worker_process import WorkerProcess
from policies.engine_factory import engine_for
from policies.model import RiskModel
from policies.processor import BatchResult, Processor, RawRecord
from policies.snapshot import SnapshotRejected, sign_snapshot, verify_snapshot
from policies.spec import load_policy
from streams.broker import EmbeddedBroker, free_port, terminate
from streams.codec import Limits
from streams.kafka_io import LogRecord
from tests.e2e.helpers import publish, read_topic, record, settings_of, wait_committed
from tests.group_timings import GROUP_TIMINGS
from tests.unit.test_deploy_grafana import dashboard, dashboard_expressions, metric_names

pytestmark = [pytest.mark.broker, pytest.mark.promtool]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: The job name the alert LimitstreamWorkerNotReady selects (``up{job=~"limitstream.*"}``).
JOB = "limitstream"
HMAC_KEY = "test-only-hmac-key"
#: The trainer publishes a snapshot once both labels of the log are learnt: exactly one.
SNAPSHOT_EVERY_LABELS = 2
#: Longest wait for a value to reach Prometheus: the population gauges, lag and readiness are
#: refreshed by a 10 s timer (agents.worker.GAUGE_INTERVAL_S), plus a 1 s scrape.
SETTLE_S = 30.0

T0 = 1_767_225_600_000
H = 3_600_000
DAY = 24 * H
USERS = ("s001", "s002", "s003", "s004")
#: Its only transaction arrives under another key: re-keyed, then applied.
MIS_KEYED = "s005"

T = TypeVar("T")


# -- the log -----------------------------------------------------------------------------------


def opened(uid: str) -> dict[str, Any]:
    return {"event_id": f"{uid}-open", "user_id": uid, "ts": T0, "kind": "opened",
            "initial_limit": 2_000_000, "currency": "CNY", "declared_income": 1_500_000}


def purchase(uid: str, i: int, **changes: Any) -> dict[str, Any]:
    return {"event_id": f"{uid}-tx{i}", "user_id": uid, "ts": T0 + (i + 1) * H,
            "kind": "purchase", "amount": 12_345 + i, "currency": "CNY",
            "merchant_category": "5411", "country": "CN", **changes}


def due(uid: str) -> dict[str, Any]:
    return {"event_id": f"{uid}-due", "user_id": uid, "ts": T0 + 20 * H, "kind": "due",
            "installment_id": f"{uid}-m1", "amount_due": 50_000, "due_ts": T0 + 20 * DAY,
            "currency": "CNY"}


def paid(uid: str) -> dict[str, Any]:
    return {"event_id": f"{uid}-paid", "user_id": uid, "ts": T0 + 30 * H, "kind": "paid",
            "installment_id": f"{uid}-m1", "amount_paid": 50_000, "currency": "CNY"}


def overdue(uid: str) -> dict[str, Any]:
    # 30 days past due: the default policy's label_dpd, so the installment is labelled "1".
    return {"event_id": f"{uid}-overdue", "user_id": uid, "ts": T0 + 50 * DAY,
            "kind": "overdue", "installment_id": f"{uid}-m1", "days_past_due": 30}


@dataclass
class Traffic:
    """The log in phases (inside a phase a user's records are on one topic, so the worker
    applies them in the log's order), and what the worker must count for it."""

    phases: list[list[LogRecord]]
    #: (logical topic, kind) -> inputs applied.
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (logical topic, reason) -> dead letters.
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def log(self) -> list[LogRecord]:
        return [r for phase in self.phases for r in phase]


def traffic() -> Traffic:
    accounts = [record("account-events", opened(u)) for u in (*USERS, MIS_KEYED)]
    txs = [record("transactions", purchase(u, i)) for u in USERS for i in range(3)]
    txs.append(record("transactions", purchase(USERS[0], 0)))  # upstream duplicate
    txs.append(record("transactions", purchase(MIS_KEYED, 0), key="account-42"))
    txs.append(record("transactions", purchase(USERS[0], 9, currency="USD")))  # dead letter
    repay = [
        record("repayments", due(USERS[0])), record("repayments", paid(USERS[0])),  # label 0
        record("repayments", due(USERS[1])), record("repayments", overdue(USERS[1])),  # 1
        record("repayments", due(USERS[2])),  # pending: no outcome yet
    ]
    t = Traffic([accounts, txs, repay])
    t.events.update({("account-events", "opened"): 5, ("transactions", "purchase"): 13,
                     ("repayments", "due"): 3, ("repayments", "paid"): 1,
                     ("repayments", "overdue"): 1})
    t.dead_letters[("transactions", "wrong_currency")] = 1
    return t


def forged_snapshot() -> bytes:
    """A well-formed snapshot signed with another key: refused as ``bad_mac``."""
    model = RiskModel()
    meta = {"version": model.version, "n_learned": model.n_learned, "labels_offset": 10**6,
            "created_ts": T0}
    return sign_snapshot(model.to_state(), key=b"not the deployment's key, 32 byte", meta=meta)


@dataclass
class Expected:
    """What the pure core makes of the log: the worker's figures must be the same."""

    decisions: Counter[str]
    fallbacks: Counter[str]
    latency_count: int
    labels: Counter[str]
    pending: int
    users: Counter[tuple[str, str]]
    limit_extended: int


def expected(env: dict[str, str], log: list[LogRecord]) -> Expected:
    settings = settings_of(env)
    policy = load_policy(settings.policy_file)
    engine, _ = engine_for(policy, settings)  # the worker's engine (agents.worker.build)
    processor = Processor(engine, Limits(settings.currency, settings.max_message_bytes))
    offsets: Counter[str] = Counter()
    raw = []
    for r in log:
        raw.append(RawRecord(r.topic, -1, offsets[r.topic], r.key, r.value))
        offsets[r.topic] += 1
    result: BatchResult = processor.process(raw, lambda _: None)
    states = result.states.values()
    return Expected(
        decisions=Counter(d.action.value for d in result.decisions),
        fallbacks=Counter(a.result.fallback_reason for a in result.applied
                          for _ in a.result.decisions if a.result.fallback_reason),
        latency_count=sum(1 for a in result.applied if a.result.outputs),
        labels=Counter(str(label) for a in result.applied for label in a.result.labels),
        pending=sum(len(s.pending) for s in states),
        users=Counter((s.account.status.value, str(s.account.stage) if s.account.stage else "")
                      for s in states),
        limit_extended=sum(s.account.limit for s in states),
    )


# -- a Prometheus server -----------------------------------------------------------------------


class PrometheusError(RuntimeError):
    pass


@dataclass
class Prometheus:
    """A ``prometheus`` server on a loopback port, its data in a temporary directory."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, targets: list[str], rule_files: list[Path],
              alertmanager: str = "") -> Prometheus:
        """Scrape ``targets`` every second, evaluate ``rule_files`` every second and send
        firing alerts to ``alertmanager`` (host:port) when one is given."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("the `prometheus` server is not installed: run `make promtool` "
                        "(Debian's `prometheus` package)", pytrace=False)
        config = workdir / "prometheus.yml"
        doc: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": targets}]}],
        }
        if alertmanager:
            doc["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager]}]}]}
        config.write_text(yaml.safe_dump(doc))
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return cls(process, port, log_path)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        terminate(self.process, 10)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: "
                                  f"{body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", promql
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The instant vector of ``promql`` by the values of ``labels``."""
        return {tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1])
                for s in self.query(promql)}

    def value(self, promql: str) -> float | None:
        """The single sample of ``promql`` (None when the result is empty)."""
        result = self.query(promql)
        assert len(result) <= 1, (promql, result)
        return float(result[0]["value"][1]) if result else None

    def wait_up(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n"
                                      + self.log_path.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError, PrometheusError):
                return self.values(f'up{{job="{JOB}"}}', "job") == {(JOB,): 1.0}
            return False

        eventually(up, lambda ok: ok, timeout, "the worker target to be up")


def nonzero(values: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    """The label sets of ``values`` that have counted something."""
    return {k: v for k, v in values.items() if v != 0}


def eventually(get: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll ``get`` until ``ok`` holds for its value; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last value: {value!r}")
        time.sleep(0.5)


# -- the shared worker + Prometheus ------------------------------------------------------------


@dataclass
class Scrape:
    prom: Prometheus
    worker: WorkerProcess
    env: dict[str, str]
    traffic: Traffic
    expected: Expected


@pytest.fixture(scope="module")
def scrape(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Scrape]:
    """A worker that has applied the known log, scraped every second by a real Prometheus."""
    tmp = tmp_path_factory.mktemp("scrape")
    tag = uuid.uuid4().hex[:8]
    env = {
        "LIMITSTREAM_BROKER": broker.url,
        "LIMITSTREAM_TOPIC_PREFIX": f"scrape-{tag}-",
        "LIMITSTREAM_APP_ID": f"limitstream-scrape-{tag}",
        "LIMITSTREAM_PARTITIONS": "4",
        "LIMITSTREAM_DATA_DIR": str(tmp / "data"),
        "LIMITSTREAM_LOG_LEVEL": "warning",
        "LIMITSTREAM_MODEL_HMAC_KEY": HMAC_KEY,
        "LIMITSTREAM_SNAPSHOT_EVERY_LABELS": str(SNAPSHOT_EVERY_LABELS),
        **GROUP_TIMINGS,
    }
    worker = WorkerProcess.start(env, free_port(), tmp / "worker.log")
    prom: Prometheus | None = None
    try:
        worker.wait_ready()
        # Scraped from before the first input: counters are seen rising from their 0.
        prom = Prometheus.start(tmp, [f"127.0.0.1:{worker.web_port}"], [ALERTS])
        prom.wait_up()
        t = traffic()
        for phase in t.phases:
            counts = publish(env, phase)
            if "transactions" in counts:
                counts["limitstream-rekeyed"] = 1  # the mis-keyed record, applied from there
            wait_committed(env, counts, timeout=60)
        publish(env, [LogRecord("model-snapshots", b"model", forged_snapshot())])
        exp = expected(env, t.log)
        settle(prom, t, exp)
        yield Scrape(prom, worker, env, t, exp)
    finally:
        if prom is not None:
            prom.stop()
        worker.stop(timeout=15)


def settle(prom: Prometheus, t: Traffic, exp: Expected) -> None:
    """Wait until Prometheus has scraped the worker after the whole log: every input counted,
    the trainer's snapshot served and the forged one refused, and a refresh of the 10 s
    gauges after the last decision (the limit extended changes with the last phase)."""
    eventually(lambda: nonzero(prom.values("limitstream_events_total", "topic", "kind")),
               lambda v: v == {k: float(n) for k, n in t.events.items()},
               SETTLE_S, "limitstream_events_total to match the log")
    eventually(lambda: (prom.value("limitstream_model_labels_learned_total"),
                        prom.value("limitstream_model_snapshots_loaded_total"),
                        nonzero(prom.values("limitstream_model_snapshots_refused_total",
                                            "reason"))),
               lambda v: v == (2.0, 1.0, {("bad_mac",): 1.0}),
               SETTLE_S, "2 labels learnt, 1 snapshot loaded, 1 forged one refused (bad_mac)")
    eventually(lambda: (prom.values("limitstream_users", "status", "stage"),
                        prom.value("limitstream_limit_extended_minor_units"),
                        prom.value("limitstream_ready")),
               lambda v: v == ({k: float(n) for k, n in exp.users.items()},
                               exp.limit_extended, 1.0),
               SETTLE_S, "the population gauges and readiness to match the users' states")


# -- the tests ---------------------------------------------------------------------------------


def test_a_real_prometheus_sees_the_series_of_the_known_traffic(scrape: Scrape) -> None:
    prom, t, exp = scrape.prom, scrape.traffic, scrape.expected

    # Throughput per input topic and kind: exactly the log's valid inputs, once each.
    events = nonzero(prom.values("limitstream_events_total", "topic", "kind"))
    assert events == {k: float(n) for k, n in t.events.items()}
    assert sum(events.values()) == 23
    # The closed label sets exist at 0 from the start (rate() sees the first incident).
    dead = prom.values("limitstream_dead_letters_total", "topic", "reason")
    assert nonzero(dead) == {k: float(n) for k, n in t.dead_letters.items()}
    assert (("repayments", "malformed_json") in dead) and len(dead) > len(t.dead_letters)
    assert nonzero(prom.values("limitstream_duplicates_total", "topic", "cause")) == {
        ("transactions", "event_id"): 1.0}
    assert nonzero(prom.values("limitstream_rekeyed_total", "topic")) == {
        ("transactions",): 1.0}
    assert prom.value("limitstream_late_events_total") == 0
    # Processing time per event, one observation per applied input, by source topic.
    by_topic: Counter[str] = Counter()
    for (topic, _), n in t.events.items():
        by_topic[topic] += n
    # A re-keyed record is labelled with its source topic, as in limitstream_events_total.
    assert nonzero(prom.values("limitstream_processing_seconds_count", "topic")) == {
        (topic,): float(n) for topic, n in by_topic.items()}
    assert prom.values("sum by (stage) (limitstream_agent_errors_total)", "stage") == {
        (s,): 0.0 for s in ("decode", "process", "send", "timer")}

    # Decisions by action (every action present, the untaken ones at 0), and their latency.
    assert prom.values("limitstream_decisions_total", "action") == {
        (a,): float(exp.decisions[a]) for a in ACTIONS}
    assert exp.decisions["OPEN"] == 5
    assert prom.values("limitstream_fallback_decisions_total", "reason") == {
        (r,): float(exp.fallbacks[r]) for r in FALLBACK_REASONS}
    assert prom.value("limitstream_decision_latency_seconds_count") == exp.latency_count
    assert prom.value('limitstream_decision_latency_seconds_bucket{le="+Inf"}') == (
        exp.latency_count)
    assert exp.latency_count >= 5

    # Delayed labels and the model: 2 labels learnt, one snapshot served, one forged refused.
    assert prom.values("limitstream_labels_emitted_total", "label") == {
        ("0",): float(exp.labels["0"]), ("1",): float(exp.labels["1"])}
    assert exp.labels == Counter({"0": 1, "1": 1})
    assert prom.value("limitstream_model_labels_learned_total") == 2
    assert prom.value("limitstream_model_snapshots_loaded_total") == 1
    assert nonzero(prom.values("limitstream_model_snapshots_refused_total", "reason")) == {
        ("bad_mac",): 1.0}
    served = [snap.version for snap in snapshots(scrape.env)]
    assert len(served) == 1
    assert prom.values("limitstream_model_info", "version", "source") == {
        (served[0], "rules"): 1.0}  # the model has too few labels to decide: rules decide
    assert prom.value("limitstream_labels_expired_total") == 0
    assert prom.value("limitstream_model_drift_detections_total") == 0
    assert prom.query("limitstream_model_roc_auc")
    assert prom.query("limitstream_model_log_loss")

    # Gauges refreshed by the worker's 10 s timer: population, readiness, lag.
    users = prom.values("limitstream_users", "status", "stage")
    assert users == {k: float(n) for k, n in exp.users.items()}
    assert sum(users.values()) == len(USERS) + 1
    assert prom.value("limitstream_table_users") == len(USERS) + 1
    assert prom.value("limitstream_limit_extended_minor_units") == exp.limit_extended
    assert prom.value("limitstream_ready") == 1
    lag = prom.values("limitstream_consumer_lag", "topic", "partition")
    prefix = scrape.env["LIMITSTREAM_TOPIC_PREFIX"]
    lagged_topics = {topic.removeprefix(prefix) for topic, _ in lag}
    assert {"transactions", "repayments", "account-events"} <= lagged_topics, lag
    assert all(v == 0 for v in lag.values()), lag
    rebalances = prom.value("limitstream_rebalances_total")
    assert rebalances is not None and rebalances >= 1  # the first assignment

    # Faust's own sensor, on the same page.
    received = prom.value("faust_messages_received_total")
    assert received is not None and received >= len(t.log) + 1
    assert prom.query('{__name__=~"faust_.+_latency_bucket"}')


def test_pending_labels_gauge_counts_installments_awaiting_an_outcome(scrape: Scrape) -> None:
    # s003's installment is due with no outcome yet: its label snapshot waits.
    assert scrape.expected.pending == 1
    # (The fixture waited for a refresh of the 10 s gauges after the whole log.)
    assert scrape.prom.value("limitstream_pending_labels") == scrape.expected.pending


def snapshots(env: dict[str, str]) -> list[Any]:
    """The snapshots on the broker that verify with the deployment's key."""
    good = []
    for rec in read_topic(env, "model-snapshots"):
        raw = base64.b64decode(rec["value"]["value_b64"])
        with contextlib.suppress(SnapshotRejected):
            good.append(verify_snapshot(raw, key=HMAC_KEY.encode()))
    return good


# -- every panel and every alert names a series of the scrape ----------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, dashboard variable and alert rule."""
    sources = [(f"panel {title!r}", expr) for title, expr in dashboard_expressions()]
    for var in dashboard().get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query":
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", text)
            sources.append((f"variable {var['name']!r}", m.group(1) if m else text))
    sources += [(f"alert {r.get('alert') or r.get('record')}", r["expr"])
                for r in alert_rules()]
    return sources


def selectors(expr: str) -> set[str]:
    """The series selectors of ``expr``: each metric name with its label matchers, Grafana's
    ``$instance`` set to "every worker"."""
    names = metric_names(expr)
    text = re.sub(r"#[^\n]*", "", expr).replace("$instance", ".*")
    return {m.group(1) + (m.group(2) or "")
            for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", text)
            if m.group(1) in names}


def test_every_panel_and_alert_names_a_series_of_the_real_scrape(scrape: Scrape) -> None:
    prom = scrape.prom
    scraped = set(prom.api("label/__name__/values"))
    used: dict[str, set[str]] = {}
    selected: dict[str, set[str]] = {}
    for where, expr in expressions():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
        for sel in selectors(expr):
            selected.setdefault(sel, set()).add(where)
    assert {"limitstream_events_total", "faust_messages_received_total", "up"} <= set(used)
    missing = {name: sorted(where) for name, where in used.items() if name not in scraped}
    assert not missing, f"named by the dashboard or alerts, absent from a real scrape: {missing}"
    # With their label matchers too (action="SUSPEND", job=~"limitstream.*", ...).
    assert 'limitstream_decisions_total{action="SUSPEND"}' in selected
    empty = {sel: sorted(where) for sel, where in selected.items() if not prom.query(sel)}
    assert not empty, f"selectors that select nothing in a real scrape: {empty}"


def test_every_panel_returns_data_and_every_rule_evaluates(scrape: Scrape) -> None:
    prom = scrape.prom
    empty = []
    for title, expr in dashboard_expressions():
        promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        if not prom.query(promql):
            empty.append((title, promql))
    assert not empty, f"panels with no data on a healthy, busy worker: {empty}"

    def rules() -> list[dict[str, Any]]:
        groups = prom.api("rules")["groups"]
        return [r for g in groups for r in g["rules"]]

    loaded = eventually(rules, lambda rs: bool(rs) and all(r["health"] != "unknown" for r in rs),
                        10.0, "every rule evaluated")
    assert len(loaded) == len(alert_rules())
    bad = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not bad, bad
    # On this healthy worker the one alert that fires is the forged snapshot's.
    firing = eventually(
        lambda: {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]
                 if a["state"] == "firing"},
        lambda names: "LimitstreamSnapshotsRefused" in names, 10.0, "the refused snapshot alert")
    assert firing == {"LimitstreamSnapshotsRefused"}
