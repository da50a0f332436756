"""Shared pieces of the end-to-end benches: broker, backlog, child processes, statistics.

Every job gets its own embedded broker (Tansu, memory storage) on a free loopback port, so
no job sees another's topics, groups or memory growth; every child process is started in its
own session and stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from lab.simulate import SimConfig, simulate
from streams.broker import EmbeddedBroker
from streams.kafka_io import LogRecord

#: Partitions of every input topic, as in the default deployment (LIMITSTREAM_PARTITIONS).
PARTITIONS = 8
#: Tansu wants explicit retention configs (FINDINGS.md).
TOPIC_CONFIGS = {"retention.ms": str(7 * 86_400_000), "retention.bytes": "-1"}
#: Seed of the simulated portfolio every bench uses.
SEED = 7


# -- the data ---------------------------------------------------------------------------------

def portfolio(events: int, users: int = 2000, days: int = 90) -> list[LogRecord]:
    """The first ``events`` input events of a simulated portfolio (lab.simulate), in
    event-time order, as log records (logical topic, key = user_id, value = JSON bytes)."""
    out: list[LogRecord] = []
    for line in simulate(SimConfig(users=users, days=days, seed=SEED)):
        out.append(LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value)))
        if len(out) >= events:
            break
    if len(out) < events:
        raise ValueError(f"the simulation gave {len(out)} events, fewer than {events}")
    return out


def mean_bytes(records: Sequence[LogRecord]) -> float:
    return sum(len(r.value) for r in records) / max(1, len(records))


# -- broker and topics ------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_broker(workdir: Path) -> Iterator[EmbeddedBroker]:
    """A new embedded broker for one job, stopped by its PID afterwards."""
    broker = EmbeddedBroker.start(log=workdir / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


async def create_topics(bootstrap: str, names: Iterable[str],
                        partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=TOPIC_CONFIGS)
                                   for n in names])
    finally:
        await admin.close()


async def produce_all(bootstrap: str, records: Iterable[LogRecord],
                      topic_of: dict[str, str] | None = None) -> int:
    """Publish ``records`` as fast as possible (tuned producer), in order; returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    n = 0
    try:
        for r in records:
            topic = topic_of.get(r.topic, r.topic) if topic_of else r.topic
            await producer.send(topic, r.value, key=r.key)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


# -- child processes --------------------------------------------------------------------------

@dataclass
class Child:
    """A child process in its own session, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
        out = open(log, "ab")  # noqa: SIM115 - the child keeps its own descriptor
        try:
            p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        finally:
            out.close()
        return cls(name, p, log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, n: int = 2500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL: a bench does not wait for a clean hand-over."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_status(child: Child, status: Path, timeout: float) -> dict[str, float]:
    """Wait for a reference app's status file (JSON: first, last, n); raise on a timeout or
    a dead child, with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status.exists():
            data = status.read_bytes()
            if data.endswith(b"\n"):
                result: dict[str, float] = orjson.loads(data)
                return result
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n"
                               f"{child.tail()}")
        time.sleep(0.05)
    raise TimeoutError(f"{child.name}: no result within {timeout:.0f} s:\n{child.tail()}")


def write_status(path: str, first: float, last: float, n: int, **extra: object) -> None:
    """Called by a reference app when its last record is processed (wall-clock times)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps({"first": first, "last": last, "n": n, **extra}) + b"\n")
    os.replace(tmp, path)


def rate_of(status: dict[str, float]) -> float:
    """Events/s from the first to the last record processed."""
    return (status["n"] - 1) / max(1e-9, status["last"] - status["first"])


# -- the worker's /metrics ------------------------------------------------------------------

PROGRESS_SERIES = (b"limitstream_events_total{", b"limitstream_dead_letters_total{",
                   b"limitstream_duplicates_total{")


def read_progress(port: int, timeout: float = 2.0) -> int:
    """Inputs a limitstream worker has finished with: applied + dead letters + duplicates."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        body = r.read()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(PROGRESS_SERIES):
            total += float(line.rsplit(b" ", 1)[1])
    return int(total)


def read_series(port: int, prefix: bytes) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as r:
        body = r.read()
    return sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines()
               if line.startswith(prefix))


# -- statistics -------------------------------------------------------------------------------

def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    """``median (min-max, n=..)`` of a sample; the spread says how noisy the machine was."""
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:,.0f} (n=1)"
    return f"{median(xs):,.0f} (min {min(xs):,.0f}, max {max(xs):,.0f}, n={len(xs)})"


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sample."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q / 100 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def workdir(prefix: str = "limitstream-bench-") -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)

