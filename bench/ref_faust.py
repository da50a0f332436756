"""Reference Faust jobs for the throughput bench, each run as its own worker process.

``python -m bench.ref_faust floor worker``
    The framework's floor: an agent that only counts the messages of a raw-bytes topic.
    Worker at log level warning with the terminal spinner off (FINDINGS.md: the spinner sets
    the root logger to DEBUG).
``python -m bench.ref_faust conventional worker``
    The job as it is usually written: a typed ``faust.Record`` value, per-user 1-hour
    aggregates in a Table (``table[k] += amount``: one changelog record per event) and one
    output message (a Record) per input; stock Faust settings (no producer or consumer
    tuning) and a stock worker (log level warning, spinner on).

Both take their configuration from ``BENCH_*`` variables (set by :mod:`bench.throughput`):
``BENCH_BROKER`` (``kafka://host:port``), ``BENCH_GROUP`` (app id), ``BENCH_INPUT``,
``BENCH_OUTPUT``, ``BENCH_EXPECT`` (records to process), ``BENCH_STATUS`` (file written with
the wall-clock times of the first and the last record), ``BENCH_WEB_PORT``,
``BENCH_DATADIR``. Only the group-join settings differ from Faust's defaults (a short session
timeout: joins on the embedded broker are faster); they do not touch the data path.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust

from bench.harness import PARTITIONS, write_status

HOUR_MS = 3_600_000


class Event(faust.Record, serializer="json"):
    event_id: str
    user_id: str
    ts: int
    kind: str
    amount: int = 0


class HourlyTotal(faust.Record, serializer="json"):
    user_id: str
    hour: int
    total: int
    trigger_event_id: str


def _env(name: str) -> str:
    return os.environ["BENCH_" + name]


def base_conf() -> dict[str, Any]:
    return {
        "broker": _env("BROKER"),
        "store": "memory://",
        "datadir": _env("DATADIR"),
        "topic_partitions": PARTITIONS,
        "consumer_auto_offset_reset": "earliest",
        "web_port": int(_env("WEB_PORT")),
        "web_bind": "127.0.0.1",
        "web_host": "127.0.0.1",
        # Start-up only: a short session makes the group join on the embedded broker quick.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 6.0,
    }


class Progress:
    """Counts processed records; writes the status file at the expected count."""

    def __init__(self) -> None:
        self.expect = int(_env("EXPECT"))
        self.status = _env("STATUS")
        self.n = 0
        self.first = 0.0

    def tick(self) -> None:
        self.n += 1
        if self.n == 1:
            self.first = time.time()
        if self.n == self.expect:
            write_status(self.status, self.first, time.time(), self.n)


def floor_app() -> faust.App:
    app = faust.App(_env("GROUP"), **base_conf())
    topic = app.topic(_env("INPUT"), key_serializer="raw", value_serializer="raw")
    progress = Progress()

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def count(stream: Any) -> None:
        async for _ in stream:
            progress.tick()

    return app


def conventional_app() -> faust.App:
    app = faust.App(_env("GROUP"), **base_conf())
    source = app.topic(_env("INPUT"), value_type=Event)
    out = app.topic(_env("OUTPUT"), value_type=HourlyTotal)
    totals = app.Table("hourly-totals", default=int, partitions=PARTITIONS)
    progress = Progress()

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def aggregate(stream: Any) -> None:
        async for ev in stream:
            hour = ev.ts // HOUR_MS
            key = f"{ev.user_id}:{hour}"
            totals[key] += ev.amount
            await out.send(key=ev.user_id, value=HourlyTotal(
                user_id=ev.user_id, hour=hour, total=totals[key],
                trigger_event_id=ev.event_id))
            progress.tick()

    return app


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("floor", "conventional"):
        print("usage: python -m bench.ref_faust floor|conventional worker", file=sys.stderr)
        return 2
    if argv[0] == "floor":
        worker = faust.Worker(floor_app(), loglevel="warning")
        worker.spinner = None
    else:
        worker = faust.Worker(conventional_app(), loglevel="warning")  # stock: spinner on
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
