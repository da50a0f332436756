"""Decision latency at fixed loads: event produced -> its decision visible to a consumer.

One worker (``python -m limitstream worker``) on its own embedded broker. A warm-up backlog
(the first records of the simulated portfolio: every ``opened`` and some history) is applied
first; then the portfolio goes on at a fixed rate, with an ``income_reported`` (a decision
point) inserted after every ninth record, one level after the other (e.g. 25 %, 50 %,
75 % of the maximum rate measured by :mod:`bench.throughput`). Every record is stamped with
the wall-clock time of its ``send()``; a group-less consumer of the ``decisions`` topic (the
audit log: every decision point — repayment, account event, command, review, anomaly —
writes one) matches each decision to its ``trigger_event_id`` and takes the time it was
read. The first seconds of a level are not counted (the rate change settles).

The embedded broker does not answer a fetch early when data arrives (it waits the fetch's
``fetch_max_wait_ms``, FINDINGS.md); the bench's own consumer therefore polls with a 5 ms
wait, which bounds what it adds to every figure.

``python -m bench.latency --rate 2000`` (the maximum rate; levels are fractions of it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import fresh_broker, percentile, portfolio, read_progress, workdir
from bench.throughput import limitstream_env
from limitstream.worker_process import WorkerProcess
from streams.broker import free_port
from streams.kafka_io import LogRecord, ensure_topics, logical_topics, produce
from streams.settings import Settings

#: The bench's consumer of the decisions topic: its fetch wait bounds the bias it adds.
CONSUMER_FETCH_WAIT_MS = 5
_ids = itertools.count()


@dataclass
class Level:
    fraction: float
    rate: float  # target events/s
    achieved: float = 0.0  # events/s actually sent
    sent: int = 0
    decisions: int = 0  # decision points sent in the counted window
    matched: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    drain_s: float = 0.0  # after the last send, until the worker had applied everything

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


@dataclass
class LatencyResult:
    levels: list[Level]
    warmup_events: int
    error: str = ""


def decision_mix(records: Sequence[LogRecord], every: int = 10) -> list[LogRecord]:
    """The portfolio with an ``income_reported`` (a decision point) for the user of every
    ``every - 1``-th record inserted after it: about one decision point in ``every`` events
    on top of the portfolio's own repayments and account events."""
    out: list[LogRecord] = []
    for i, rec in enumerate(records):
        out.append(rec)
        if (i + 1) % (every - 1) == 0:
            v = orjson.loads(rec.value)
            out.append(LogRecord("account-events", rec.key, orjson.dumps({
                "event_id": f"{v['user_id']}-bench-income-{i}", "user_id": v["user_id"],
                "ts": v["ts"], "kind": "income_reported",
                "monthly_income": 800_000 + (i % 7) * 100_000, "currency": "CNY"})))
    return out


def _is_decision_point(rec: LogRecord) -> bool:
    # Every repayment, account event and command is one (policies.decide.is_decision_point);
    # a transaction is one only at a review or an anomaly, which the bench does not predict.
    return rec.topic != "transactions"


async def _drive(settings: Settings, levels: list[Level], records: Sequence[LogRecord],
                 seconds: float, settle: float, port: int, applied_before: int) -> None:
    bootstrap = settings.broker.removeprefix("kafka://")
    names = logical_topics(settings)
    decisions_topic = names["decisions"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=CONSUMER_FETCH_WAIT_MS)
    await producer.start()
    await consumer.start()
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    stop = asyncio.Event()
    sent = 0

    async def read() -> None:
        consumer.assign([TopicPartition(decisions_topic, p) for p in range(settings.partitions)])
        loads = orjson.loads
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    trig = loads(r.value).get("trigger_event_id")
                    if trig in sent_at and trig not in seen_at:
                        seen_at[trig] = now

    reader = asyncio.create_task(read())
    try:
        it = iter(records)
        loop = asyncio.get_running_loop()
        for level in levels:
            n_total = int(level.rate * seconds)
            counted: list[str] = []
            t0 = loop.time()
            wall0 = time.time()
            for i in range(n_total):
                rec = next(it)
                due = t0 + i / level.rate
                ahead = due - loop.time()
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
                event_id = orjson.loads(rec.value)["event_id"]
                sent_at[event_id] = time.time()
                await producer.send(names[rec.topic], rec.value, key=rec.key)
                sent += 1
                if _is_decision_point(rec) and sent_at[event_id] - wall0 >= settle:
                    counted.append(event_id)
            level.sent = n_total
            level.achieved = n_total / max(1e-9, time.time() - wall0)
            end = time.time()
            await producer.flush()
            # Wait until the worker has finished with every record sent so far (60 s at
            # most), then a moment for the last decisions to be read.
            done_at = 0.0
            for _ in range(600):
                with contextlib.suppress(OSError):
                    if await asyncio.to_thread(read_progress, port) >= applied_before + sent:
                        done_at = time.time()
                        break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            level.drain_s = max(0.0, done_at - end) if done_at else -1.0
            level.decisions = len(counted)
            lat = [(seen_at[e] - sent_at[e]) * 1000 for e in counted if e in seen_at]
            level.matched = len(lat)
            level.latencies_ms = lat
    finally:
        stop.set()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await producer.stop()
        await consumer.stop()


def run_latency(max_rate: float, fractions: Sequence[float] = (0.1, 0.25, 0.5, 0.75),
                seconds: float = 12.0, settle: float = 2.0, warmup_events: int = 6000,
                module: str = "limitstream", extra_env: dict[str, str] | None = None,
                timeout: float = 120.0) -> LatencyResult:
    levels = [Level(f, max_rate * f) for f in fractions]
    need = warmup_events + sum(int(lv.rate * seconds) + 1 for lv in levels)
    records = portfolio(need, users=2000, days=180)
    with workdir() as tmp_s:
        tmp = Path(tmp_s)
        with fresh_broker(tmp) as broker:
            env = {**limitstream_env(broker.url, tmp / "data", f"lat{next(_ids)}"),
                   **(extra_env or {})}
            settings = Settings.from_env(env)
            asyncio.run(ensure_topics(settings))
            worker = WorkerProcess.start(env, free_port(), tmp / "worker.log", module=module)
            try:
                worker.wait_ready(timeout=60)
                asyncio.run(produce(settings, records[:warmup_events]))
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    with contextlib.suppress(OSError):
                        if read_progress(worker.web_port) >= warmup_events:
                            break
                    if not worker.alive():
                        raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
                    time.sleep(0.2)
                else:
                    return LatencyResult(levels, warmup_events, error="warm-up timed out")
                applied = read_progress(worker.web_port)
                asyncio.run(_drive(settings, levels, decision_mix(records[warmup_events:]),
                                   seconds, settle, worker.web_port, applied))
            except (RuntimeError, TimeoutError) as exc:
                return LatencyResult(levels, warmup_events, error=str(exc))
            finally:
                worker.stop(timeout=5)
    return LatencyResult(levels, warmup_events)


def format_levels(result: LatencyResult) -> list[str]:
    lines = []
    for lv in result.levels:
        if not lv.latencies_ms:
            lines.append(f"  {lv.fraction:>4.0%} of max ({lv.rate:,.0f}/s): no decision matched")
            continue
        lines.append(
            f"  {lv.fraction:>4.0%} of max: target {lv.rate:>6,.0f}/s, sent {lv.achieved:>6,.0f}/s"
            f"  p50 {lv.p(50):7.1f} ms  p99 {lv.p(99):7.1f} ms  max {max(lv.latencies_ms):7.1f} ms"
            f"  ({lv.matched}/{lv.decisions} decisions matched; "
            + (f"worker done {lv.drain_s:.1f} s after the last send)" if lv.drain_s >= 0
               else "worker NOT caught up 60 s after the last send)"))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, required=True, help="the maximum rate, events/s")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,0.75")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--module", default="limitstream")
    args = ap.parse_args()
    res = run_latency(args.rate, [float(x) for x in args.fractions.split(",")],
                      seconds=args.seconds, module=args.module)
    if res.error:
        print("error:", res.error)
    print("\n".join(format_levels(res)))


if __name__ == "__main__":
    main()
