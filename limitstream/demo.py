"""``limitstream demo``: embedded broker, one worker, a simulated portfolio, shown live.

The simulator publishes in accelerated event time (months of a portfolio in minutes); the
view reads the worker's ``/metrics`` and the ``decisions`` topic. Ctrl-C (or ``--seconds``)
stops everything it started: the publisher, the worker (SIGTERM), then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import socket
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from limitstream.worker_process import WorkerProcess
from streams.app import aiokafka_kwargs
from streams.broker import EmbeddedBroker
from streams.kafka_io import LogRecord, ensure_topics, produce
from streams.settings import Settings

#: Records per second the demo publishes: a lively view that a laptop keeps up with.
DEMO_RATE = 1500.0
#: The alert rules of a source checkout (absent from an installed wheel: no rules then).
ALERT_RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"


def prometheus_command(settings: Settings, rules: Path = ALERT_RULES) -> str:
    """Write a Prometheus configuration that scrapes this demo's worker (with the alert rules
    when the checkout has them) into the data directory, and return the command that runs
    Prometheus on it, on 127.0.0.1:9090."""
    data = Path(settings.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    config = data / "demo-prometheus.yml"
    lines = [
        "# Written by `limitstream demo`: scrapes its worker.",
        "global:",
        "  scrape_interval: 5s",
        "  evaluation_interval: 5s",
    ]
    if rules.is_file():
        lines += ["rule_files:", f"  - {json.dumps(str(rules))}"]
    lines += [
        "scrape_configs:",
        "  - job_name: limitstream",  # the job the alerts select
        "    static_configs:",
        f"      - targets: ['127.0.0.1:{settings.web_port}']",
    ]
    config.write_text("\n".join(lines) + "\n")
    return (f"prometheus --config.file={shlex.quote(str(config))} "
            f"--storage.tsdb.path={shlex.quote(str(data / 'prometheus'))} "
            "--web.listen-address=127.0.0.1:9090")


@dataclass
class Snapshot:
    """What the view shows, refreshed from /metrics."""

    events: float = 0.0
    events_per_s: float = 0.0
    dead_letters: float = 0.0
    decisions: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, float] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    model: str = "-"
    auc: float = float("nan")


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """A quantile from cumulative histogram buckets (upper bound, count), as Prometheus does."""
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return prev_le


def read_metrics(url: str, previous: Snapshot, dt: float) -> Snapshot:
    with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
        text = r.read().decode()
    s = Snapshot()
    buckets: list[tuple[float, float]] = []
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "limitstream_events_total":
                s.events += value
            elif name == "limitstream_dead_letters_total":
                s.dead_letters += value
            elif name == "limitstream_decisions_total":
                s.decisions[labels["action"]] = value
            elif name == "limitstream_users":
                key = labels["status"] + (f" {labels['stage']}" if labels["stage"] != "0" else "")
                s.statuses[key] = value
            elif name == "limitstream_decision_latency_seconds_bucket":
                buckets.append((float(labels["le"]), value))
            elif name == "limitstream_model_info" and value == 1:
                s.model = f"{labels['version']} ({labels['source']})"
            elif name == "limitstream_model_roc_auc":
                s.auc = value
    buckets.sort()
    s.p50_ms = _quantile(buckets, 0.5) * 1000
    s.p99_ms = _quantile(buckets, 0.99) * 1000
    s.events_per_s = max(0.0, (s.events - previous.events) / dt) if dt > 0 else 0.0
    return s


def _portfolio(users: int, settings: Settings) -> Iterator[LogRecord]:
    import orjson

    from lab.simulate import SimConfig, simulate

    cfg = SimConfig(users=users, days=180, currency=settings.currency,
                    home_country=settings.home_country,
                    utc_offset_minutes=settings.utc_offset_minutes)
    for line in simulate(cfg):
        yield LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))


def _render(snap: Snapshot, latest: deque[dict[str, Any]], worker: WorkerProcess,
            published: int) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]events[/b] {snap.events:,.0f}  ({snap.events_per_s:,.0f}/s)",
        f"[b]published[/b] {published:,}",
        f"[b]dead letters[/b] {snap.dead_letters:,.0f}",
        f"[b]latency[/b] p50 {snap.p50_ms:.0f} ms  p99 {snap.p99_ms:.0f} ms",
    )
    head.add_row(
        "[b]decisions[/b] " + "  ".join(f"{k} {v:,.0f}" for k, v in sorted(snap.decisions.items())
                                        if k != "HOLD"),
        "[b]accounts[/b] " + "  ".join(f"{k} {v:,.0f}" for k, v in sorted(snap.statuses.items())),
        f"[b]model[/b] {snap.model}",
        f"metrics {worker.url}/metrics   user view {worker.url}/users/<user_id>",
    )
    t = Table(title="latest decisions", expand=True)
    for col in ("user", "action", "limit", "status", "reasons", "score"):
        t.add_column(col)
    for d in list(latest)[::-1]:
        t.add_row(d["user_id"], d["action"], f"{d['old_limit'] / 100:,.0f} → "
                  f"{d['new_limit'] / 100:,.0f}", d["new_status"] +
                  (f" {d['new_stage']}" if d["new_stage"] else ""),
                  ", ".join(d["reasons"]), f"{d['risk_score']:.3f} {d['risk_source']}")
    return Group(head, t)


def _line(d: dict[str, Any]) -> str:
    return (f"{d['user_id']} {d['action']:<9} {d['old_limit'] / 100:>10,.0f} -> "
            f"{d['new_limit'] / 100:>10,.0f} {d['new_status']:<10} {','.join(d['reasons'])}")


async def _demo(settings: Settings, worker: WorkerProcess, users: int, seconds: float,
                interactive: bool) -> None:
    latest: deque[dict[str, Any]] = deque(maxlen=14)
    published = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal must not leave the broker and the worker behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    async def publish() -> None:
        nonlocal published

        def counted() -> Iterator[LogRecord]:
            nonlocal published
            for rec in _portfolio(users, settings):
                published += 1
                yield rec

        await produce(settings, counted(), rate=DEMO_RATE)

    async def follow() -> None:
        c = AIOKafkaConsumer(settings.topics.decisions, **aiokafka_kwargs(settings),
                             group_id=None, auto_offset_reset="earliest")
        await c.start()
        try:
            async for rec in c:
                import orjson

                d = orjson.loads(rec.value)
                if d["action"] == "HOLD":
                    continue
                latest.append(d)
                if not interactive:
                    print(_line(d), flush=True)
        finally:
            await c.stop()

    tasks = [asyncio.create_task(publish()), asyncio.create_task(follow())]
    t0 = last_t = time.monotonic()
    snap = Snapshot()
    live: Any = None
    if interactive:
        from rich.live import Live

        live = Live(refresh_per_second=2)
        live.start()
    try:
        while not stop.is_set() and (not seconds or time.monotonic() - t0 < seconds):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            now = time.monotonic()
            with contextlib.suppress(OSError):
                snap = await asyncio.to_thread(read_metrics, worker.url, snap, now - last_t)
            last_t = now
            if live is not None:
                live.update(_render(snap, latest, worker, published))
            else:
                print(f"[{now - t0:5.0f}s] published {published:,} applied {snap.events:,.0f} "
                      f"({snap.events_per_s:,.0f}/s) dead-letter {snap.dead_letters:,.0f} "
                      f"decisions {sum(snap.decisions.values()):,.0f} "
                      f"p99 {snap.p99_ms:.0f} ms", flush=True)
    finally:
        if live is not None:
            live.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_demo(settings: Settings, seconds: float = 0.0, users: int = 300,
             interactive: bool = True) -> int:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # While starting up, a SIGTERM or a closed terminal unwinds like Ctrl-C: through the
    # finally below, which stops the worker and the broker.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    if _listening(settings.web_port):
        print(f"port {settings.web_port} is taken (another worker?): choose the demo worker's "
              "port with LIMITSTREAM_WEB_PORT", file=sys.stderr, flush=True)
        return 1
    broker: EmbeddedBroker | None = None
    if settings.uses_embedded_broker:
        broker = EmbeddedBroker.start()
        settings = settings.with_broker(broker.url)
        print(f"embedded broker (Tansu) on {broker.url}", flush=True)
    worker: WorkerProcess | None = None
    try:
        asyncio.run(ensure_topics(settings))
        env = {"LIMITSTREAM_BROKER": settings.broker, "LIMITSTREAM_APP_ID": settings.app_id,
               # A throw-away key for this run's model snapshots unless one is configured.
               "LIMITSTREAM_MODEL_HMAC_KEY": settings.model_hmac_key.value
               or secrets.token_hex(16)}
        log = Path(settings.data_dir) / "demo-worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess.start(env, settings.web_port, log)
        print(f"worker starting (log: {log}) ...", flush=True)
        worker.wait_ready(timeout=90)
        print(f"worker ready: metrics {worker.url}/metrics, user view "
              f"{worker.url}/users/<user_id>", flush=True)
        print(f"monitor it: {prometheus_command(settings)}", flush=True)
        asyncio.run(_demo(settings, worker, users, seconds, interactive))
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        print("demo stopped: worker and broker are down", file=sys.stderr, flush=True)
    return 0
