"""Throughput on a pre-loaded backlog: limitstream worker(s) and the reference jobs.

Every job runs on its own embedded broker with fresh topics and group; the backlog is
published before the job's process starts, and the rate is counted from the first to the
last record processed (start-up and group join excluded):

* limitstream: ``python -m limitstream worker`` (:class:`limitstream.worker_process.WorkerProcess`,
  as in production) on the four input topics; its ``/metrics`` (inputs applied + dead
  letters + duplicates) is polled every second (each scrape costs the worker a few ms: at
  5 polls/s rendering /metrics was 2.5 % of its time) and the finish time interpolated
  between polls.
* references (:mod:`bench.ref_aiokafka`, :mod:`bench.ref_faust`, :mod:`bench.ref_quix`): the
  same records on one input topic; each app writes the wall-clock times of its first and its
  last record.

``python -m bench.throughput [--events N] [--job limitstream|limitstream2|floor|...]`` runs
one job and prints its rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    Child,
    create_topics,
    fresh_broker,
    portfolio,
    produce_all,
    python_module,
    rate_of,
    read_progress,
    wait_status,
    workdir,
)
from limitstream.worker_process import WorkerProcess
from streams.broker import free_port
from streams.kafka_io import LogRecord, ensure_topics, produce
from streams.settings import Settings

REFERENCES = ("aiokafka", "floor", "conventional", "quix")
_ids = itertools.count()


#: Seconds between two progress polls of a worker's /metrics.
POLL_S = 1.0


@dataclass
class JobResult:
    job: str
    rate: float = 0.0  # events/s, 0 when the job failed
    events: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.rate > 0


def limitstream_env(broker_url: str, data_dir: Path, tag: str) -> dict[str, str]:
    return {
        "LIMITSTREAM_BROKER": broker_url,
        "LIMITSTREAM_TOPIC_PREFIX": f"{tag}-",
        "LIMITSTREAM_APP_ID": f"limitstream-{tag}",
        "LIMITSTREAM_PARTITIONS": "8",
        "LIMITSTREAM_DATA_DIR": str(data_dir),
        "LIMITSTREAM_LOG_LEVEL": "warning",
        # A throw-away key for this bench's own model snapshots.
        "LIMITSTREAM_MODEL_HMAC_KEY": secrets.token_hex(16),
    }


def _finish_time(samples: list[tuple[float, int]], n: int) -> float:
    """When the count reached ``n``: linear interpolation between the two polls around it."""
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if c0 < n <= c1:
            return t0 + (t1 - t0) * (n - c0) / max(1, c1 - c0)
    return samples[-1][0]


def run_limitstream(records: Sequence[LogRecord], workers: int = 1, timeout: float = 180.0,
                    module: str = "limitstream", extra_env: dict[str, str] | None = None,
                    label: str = "") -> JobResult:
    """One (or more) limitstream workers on a pre-loaded backlog of ``records``."""
    job = label or ("limitstream" if workers == 1 else f"limitstream x{workers}")
    n = len(records)
    with workdir() as tmp_s:
        tmp = Path(tmp_s)
        with fresh_broker(tmp) as broker:
            env = {**limitstream_env(broker.url, tmp / "data", f"ls{next(_ids)}"),
                   **(extra_env or {})}
            settings = Settings.from_env(env)

            async def load() -> None:
                await ensure_topics(settings)
                await produce(settings, records)

            asyncio.run(load())
            procs: list[WorkerProcess] = []
            try:
                for i in range(workers):
                    procs.append(WorkerProcess.start(env, free_port(), tmp / f"worker-{i}.log",
                                                     module=module))
                return _follow(job, procs, n, timeout)
            finally:
                for p in procs:
                    p.stop(timeout=5)


def _follow(job: str, procs: list[WorkerProcess], n: int, timeout: float) -> JobResult:
    """Poll the workers' progress until ``n`` inputs are done; the rate from the first poll
    that saw progress to the (interpolated) finish."""
    deadline = time.monotonic() + timeout
    samples: list[tuple[float, int]] = []
    started: list[float | None] = [None] * len(procs)
    counts = [0] * len(procs)
    while time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if not p.alive():
                return JobResult(job, error=f"worker {i} exited with {p.process.returncode}:"
                                 f"\n{p.log_tail()}")
            with contextlib.suppress(OSError):
                counts[i] = read_progress(p.web_port)
            if counts[i] and started[i] is None:
                started[i] = time.time()
        total = sum(counts)
        if total:
            samples.append((time.time(), total))
        if total >= n:
            break
        time.sleep(POLL_S)
    else:
        return JobResult(job, events=sum(counts),
                         error=f"timeout after {timeout:.0f} s: {sum(counts)}/{n} done")
    t1, c1 = samples[0]
    finish = _finish_time(samples, n)
    result = JobResult(job, rate=(n - c1) / max(1e-9, finish - t1), events=n)
    if len(procs) > 1:
        first = min(s for s in started if s is not None)
        result.notes.append("workers started processing at " + ", ".join(
            f"+{(s or first) - first:.1f} s" for s in started)
            + "; inputs per worker " + "/".join(str(c) for c in counts))
    return result


def run_reference(kind: str, records: Sequence[LogRecord], timeout: float = 180.0
                  ) -> JobResult:
    """A reference job (:data:`REFERENCES`) on a pre-loaded single topic of ``records``."""
    if kind not in REFERENCES:
        raise ValueError(f"unknown reference {kind!r}")
    module = {"aiokafka": ("bench.ref_aiokafka",), "quix": ("bench.ref_quix",),
              "floor": ("bench.ref_faust", "floor", "worker"),
              "conventional": ("bench.ref_faust", "conventional", "worker")}[kind]
    with workdir() as tmp_s:
        tmp = Path(tmp_s)
        with fresh_broker(tmp) as broker:
            tag = f"{kind}{next(_ids)}"
            src, dst = f"{tag}-in", f"{tag}-out"
            asyncio.run(create_topics(broker.bootstrap, [src, dst]))
            asyncio.run(produce_all(broker.bootstrap, records, {r.topic: src for r in records}))
            status = tmp / "status.json"
            env = {"BENCH_BROKER": broker.url, "BENCH_GROUP": f"bench-{tag}",
                   "BENCH_INPUT": src, "BENCH_OUTPUT": dst, "BENCH_EXPECT": str(len(records)),
                   "BENCH_STATUS": str(status), "BENCH_WEB_PORT": str(free_port()),
                   "BENCH_DATADIR": str(tmp / "data")}
            child = Child.start(kind, python_module(*module), env, tmp / f"{kind}.log")
            try:
                st = wait_status(child, status, timeout)
            except (RuntimeError, TimeoutError) as exc:
                return JobResult(kind, error=str(exc))
            finally:
                child.stop()
            return JobResult(kind, rate=rate_of(st), events=int(st["n"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=80_000)
    ap.add_argument("--job", default="limitstream",
                    choices=["limitstream", "limitstream2", *REFERENCES])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    records = portfolio(args.events)
    for _ in range(args.repeat):
        if args.job.startswith("limitstream"):
            r = run_limitstream(records, workers=2 if args.job == "limitstream2" else 1)
        else:
            r = run_reference(args.job, records)
        print(f"{r.job}: {r.rate:,.0f} events/s {r.error} {' '.join(r.notes)}", flush=True)


if __name__ == "__main__":
    main()
