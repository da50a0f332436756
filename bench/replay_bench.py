"""Offline replay throughput and per-user state size, on the simulated portfolio mix.

:class:`lab.replay.Replay` (the worker's processor, no broker, labels learnt in-process as
``limitstream replay`` does) over every event of a simulated portfolio of 90 days, in this
process: events/s per core (events / CPU seconds of
this single-threaded process; the wall-clock rate beside it). Then, from the replay's final
states, the stored size of a user (``len(state.encode())``, what the worker
writes to its table) and from it *estimates* for a million users: the memory store (the
measured Python footprint of a ``{key: value}`` dict of those states) and RocksDB (the
on-disk size of the same states written to a RocksDB, when ``rocksdict`` is installed).

``python -m bench.replay_bench [--users N] [--days D] [--repeat R]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from bench.harness import SEED
from lab.learning import InProcessLearning
from lab.replay import Replay
from lab.simulate import SimConfig, simulate
from limitstream.gc_tuning import tune_gc
from policies.engine_factory import engine_for
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord
from streams.settings import Settings

#: CPython's own collector thresholds, read before anything tunes them.
DEFAULT_GC_THRESHOLDS: Final = gc.get_threshold()


@dataclass
class ReplayResult:
    users: int
    days: int
    events: int
    cpu_rates: list[float] = field(default_factory=list)  # events per CPU second
    wall_rates: list[float] = field(default_factory=list)
    #: The same replay with CPython's default collector thresholds (limitstream.gc_tuning).
    default_gc_cpu_rates: list[float] = field(default_factory=list)
    state_sizes: list[int] = field(default_factory=list)
    memory_per_user: float = 0.0  # bytes, Python memory store (key + value + dict slot)
    rocksdb_per_user: float = 0.0  # bytes on disk, 0 when rocksdict is missing
    rocksdb_note: str = ""


def records_of(users: int, days: int) -> list[LogRecord]:
    return [LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))
            for line in simulate(SimConfig(users=users, days=days, seed=SEED))]


def run_replay(users: int = 1000, days: int = 90, repeat: int = 3) -> ReplayResult:
    settings = Settings()
    policy = load_policy(settings.policy_file)
    records = records_of(users, days)
    result = ReplayResult(users, days, len(records))
    replay: Replay | None = None
    for _ in range(repeat):
        for tuned in (False, True):
            # What `limitstream replay` runs: the worker's engine, labels learnt in-process,
            # and (tuned) the collector settings the CLI applies.
            engine, scorer = engine_for(policy, settings)
            learning = InProcessLearning(scorer, settings.model_kind,
                                         settings.snapshot_every_labels)
            replay = Replay(engine, Limits.from_settings(settings), learning,
                            settings.partitions)
            gc.unfreeze()
            gc.set_threshold(*DEFAULT_GC_THRESHOLDS)
            if tuned:
                tune_gc()
            else:
                gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in replay.run(records):
                pass
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            if tuned:
                result.cpu_rates.append(len(records) / cpu)
                result.wall_rates.append(len(records) / wall)
            else:
                result.default_gc_cpu_rates.append(len(records) / cpu)
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC_THRESHOLDS)
    assert replay is not None
    blobs = {uid.encode(): state.encode() for uid, state in replay.states.items()}
    result.state_sizes = sorted(len(b) for b in blobs.values())
    result.memory_per_user = _memory_per_user(blobs)
    result.rocksdb_per_user, result.rocksdb_note = _rocksdb_per_user(blobs)
    return result


def _memory_per_user(blobs: dict[bytes, bytes]) -> float:
    """Python bytes of a fresh ``{key: value}`` dict holding copies of the states."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copy = {bytes(bytearray(k)): bytes(bytearray(v)) for k, v in blobs.items()}
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del copy
    return (after - before) / max(1, len(blobs))


def _rocksdb_per_user(blobs: dict[bytes, bytes]) -> tuple[float, str]:
    try:
        from rocksdict import Rdict
    except ImportError:
        return 0.0, "rocksdict not installed (pip install -e '.[rocksdb]')"
    with tempfile.TemporaryDirectory(prefix="limitstream-bench-rocks-") as tmp:
        path = Path(tmp) / "users"
        db = Rdict(str(path))
        try:
            for k, v in blobs.items():
                db[k] = v
            db.flush()
            with contextlib.suppress(Exception):
                db.compact_range(None, None)
        finally:
            db.close()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return size / max(1, len(blobs)), "default rocksdict options, after flush and compaction"


def format_result(r: ReplayResult) -> list[str]:
    sizes = r.state_sizes
    mean = statistics.mean(sizes) if sizes else 0.0
    p99 = sizes[int(0.99 * (len(sizes) - 1))] if sizes else 0
    lines = [
        f"  replay of {r.events:,} events ({r.users:,} users x {r.days} days), "
        f"{len(r.cpu_rates)} runs: {statistics.median(r.cpu_rates):,.0f} events/s per core "
        f"(CPU time; min {min(r.cpu_rates):,.0f}, max {max(r.cpu_rates):,.0f}); "
        f"wall {statistics.median(r.wall_rates):,.0f} events/s; with CPython's default "
        f"collector thresholds {statistics.median(r.default_gc_cpu_rates):,.0f} events/s "
        f"per core",
        f"  state per user after {r.days} days (simulated mix): mean {mean:,.0f} B, "
        f"p99 {p99:,} B, max {max(sizes, default=0):,} B",
        f"  memory store per user (measured key+value+dict slot): {r.memory_per_user:,.0f} B"
        f" -> ESTIMATE for 1M users: {r.memory_per_user * 1e6 / 2**30:,.2f} GiB "
        f"(state bytes x 1M: {mean * 1e6 / 2**30:,.2f} GiB)",
    ]
    if r.rocksdb_per_user:
        lines.append(f"  RocksDB per user: {r.rocksdb_per_user:,.0f} B on disk -> ESTIMATE for "
                     f"1M users: {r.rocksdb_per_user * 1e6 / 2**30:,.2f} GiB "
                     f"({r.rocksdb_note})")
    else:
        lines.append(f"  RocksDB: not measured ({r.rocksdb_note})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("\n".join(format_result(run_replay(args.users, args.days, args.repeat))))


if __name__ == "__main__":
    main()
