"""Tuning levers of the worker, measured without editing the product (bench.patched_worker).

Each round runs the unpatched worker and then each lever on the same backlog; the gain of a
lever is its rate over the baseline's *in the same round*, median over rounds. The latency
lever (Faust's hard-coded 1 500 ms fetch wait against a broker that does not answer a fetch
early) is measured with :mod:`bench.latency`.

``python -m bench.levers [--events N] [--rounds R] [--latency-rate R]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from bench.harness import median, portfolio
from bench.latency import format_levels, run_latency
from bench.throughput import run_limitstream
from streams.kafka_io import LogRecord

THROUGHPUT_LEVERS: tuple[tuple[str, str], ...] = (
    ("take_events within 10 -> 50 ms", "agents.user_agent.BATCH_WITHIN_S=0.05"),
    ("no Faust Prometheus sensor", "faust_monitor=0"),
    ("CPython's default GC thresholds", "gc=default"),
    ("producer linger 0 -> 5 ms", "streams.app.PRODUCER_LINGER_S=0.005"),
    ("within 50 ms + no sensor",
     "agents.user_agent.BATCH_WITHIN_S=0.05;faust_monitor=0"),
)


def throughput_levers(records: Sequence[LogRecord], rounds: int) -> list[str]:
    base: list[float] = []
    gains: dict[str, list[float]] = {label: [] for label, _ in THROUGHPUT_LEVERS}
    rates: dict[str, list[float]] = {label: [] for label, _ in THROUGHPUT_LEVERS}
    for r in range(rounds):
        b = run_limitstream(records, module="bench.patched_worker",
                            extra_env={"BENCH_PATCH": ""}, label="baseline")
        print(f"  round {r + 1}: baseline {b.rate:,.0f} events/s {b.error[:200]}", flush=True)
        if not b.ok:
            continue
        base.append(b.rate)
        for label, patch in THROUGHPUT_LEVERS:
            res = run_limitstream(records, module="bench.patched_worker",
                                  extra_env={"BENCH_PATCH": patch}, label=label)
            print(f"  round {r + 1}: {label:<36} {res.rate:,.0f} events/s {res.error[:200]}",
                  flush=True)
            if res.ok:
                rates[label].append(res.rate)
                gains[label].append(res.rate / b.rate)
    lines = [f"  baseline (unpatched worker): median {median(base):,.0f} events/s"]
    for label, _ in THROUGHPUT_LEVERS:
        g = gains[label]
        lines.append(f"  {label:<36} median {median(rates[label]):>7,.0f} events/s, "
                     f"x{median(g):.2f} of the baseline in the same round "
                     f"({', '.join(f'x{x:.2f}' for x in g)})")
    return lines


def latency_lever(rate: float, seconds: float) -> list[str]:
    lines = []
    for label, patch in (("unpatched (fetch wait 1 500 ms)", ""),
                         ("fetch_max_wait_ms=10", "fetch_max_wait_ms=10")):
        res = run_latency(rate, seconds=seconds, module="bench.patched_worker",
                          extra_env={"BENCH_PATCH": patch})
        lines.append(f"  {label}:" + (f" FAILED {res.error[:300]}" if res.error else ""))
        lines.extend(format_levels(res))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-rate", type=float, default=0.0,
                    help="also the latency lever, levels of this rate (events/s)")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    args = ap.parse_args()
    t0 = time.monotonic()
    records = portfolio(args.events)
    print(f"levers on {len(records):,} events, {args.rounds} rounds", flush=True)
    for line in throughput_levers(records, args.rounds):
        print(line, flush=True)
    if args.latency_rate:
        for line in latency_lever(args.latency_rate, args.latency_seconds):
            print(line, flush=True)
    print(f"levers: {(time.monotonic() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
