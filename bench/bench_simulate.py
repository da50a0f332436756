"""Throughput of the seeded portfolio simulator (``lab.simulate``).

``python -m bench.bench_simulate`` times 10 000 users x 180 days twice — generating the
events only (:func:`lab.simulate.simulate`) and writing the JSON Lines log plus its
ground truth to a temporary file (:func:`lab.simulate.write_log`) — prints events/s and
*extrapolates* (linearly: users are independent) to 100 000 users. ``--full`` also runs
the real 100 000 x 180 write to a temporary file; ``--users``/``--days`` change the sample.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from lab.simulate import SimConfig, simulate, write_log

FULL_USERS = 100_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate_only(cfg: SimConfig) -> tuple[int, float, float]:
    """Events, wall seconds, CPU seconds of iterating :func:`simulate`."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(1 for _ in simulate(cfg))
    return n, time.perf_counter() - t0, time.process_time() - c0


def write(cfg: SimConfig) -> tuple[int, float, float, int]:
    """Events, wall seconds, CPU seconds and bytes of :func:`write_log` to a temp file."""
    with tempfile.TemporaryDirectory(prefix="limitstream-bench-") as tmp:
        path = Path(tmp) / "portfolio.jsonl"
        t0, c0 = time.perf_counter(), time.process_time()
        n = write_log(cfg, path, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = path.stat().st_size
    return n, wall, cpu, size


def _line(what: str, n: int, wall: float, cpu: float) -> str:
    return (f"  {what:<14}: {n:>12,} events, {wall:7.1f} s wall = {n / wall:>9,.0f} events/s;"
            f" {cpu:7.1f} s CPU = {n / cpu:>9,.0f} events/s per core")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_simulate", description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--full", action="store_true",
                        help=f"also write the full {FULL_USERS:,} users run (minutes)")
    args = parser.parse_args(argv)
    cfg = SimConfig(users=args.users, days=args.days)
    print(f"simulator: {cfg.users:,} users x {cfg.days} days, seed {cfg.seed}")

    print(_line("generate only", *generate_only(cfg)))
    n, wall, cpu, size = write(cfg)
    print(_line("write_log", n, wall, cpu) + f" ({size / 2**20:,.0f} MiB, {size / n:.0f} B/event)")
    factor = FULL_USERS / cfg.users
    print(f"  extrapolation (linear in users, NOT measured): {FULL_USERS:,} x {cfg.days} days "
          f"~ {n * factor:,.0f} events, write_log ~{wall * factor / 60:.1f} min wall, "
          f"~{cpu * factor / 60:.1f} min CPU")
    print(f"  peak RSS so far: {_rss_mib():,.0f} MiB")

    if args.full:
        full = SimConfig(users=FULL_USERS, days=args.days)
        n, wall, cpu, size = write(full)
        print(_line(f"FULL {FULL_USERS // 1000}k", n, wall, cpu)
              + f" ({size / 2**30:.2f} GiB, measured); peak RSS {_rss_mib():,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
