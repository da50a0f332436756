"""``limitstream``: the command line.

Settings come from ``LIMITSTREAM_*`` environment variables (see the README), read once here.
Commands that need a broker use ``LIMITSTREAM_BROKER``; ``demo`` and ``broker`` start the
embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from limitstream.gc_tuning import tune_gc
from streams.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except SettingsError as exc:
        sys.exit(f"limitstream: {exc}")


def _need_broker(settings: Settings) -> Settings:
    if not settings.broker:
        sys.exit("limitstream: set LIMITSTREAM_BROKER (e.g. kafka://127.0.0.1:9092), "
                 "or start one with `limitstream broker`")
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import run_worker
    from streams.kafka_io import ensure_topics

    settings = _need_broker(_settings())
    if args.web_port:
        settings = dataclasses.replace(settings, web_port=args.web_port)
    asyncio.run(ensure_topics(settings))
    run_worker(settings)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import EmbeddedBroker

    broker = EmbeddedBroker.start(args.host, args.port)
    print(f"embedded broker (Tansu) pid {broker.pid} on {broker.url}", flush=True)
    print(f"  export LIMITSTREAM_BROKER={broker.url}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and broker.process.poll() is None:
        time.sleep(0.2)
    broker.stop()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.kafka_io import ensure_topics, produce, read_log

    settings = _need_broker(_settings())

    async def run() -> int:
        await ensure_topics(settings)
        return await produce(settings, read_log(Path(args.file)), rate=args.rate)

    n = asyncio.run(run())
    print(f"published {n} records from {args.file}", file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from streams.kafka_io import consume

    settings = _need_broker(_settings())

    async def run() -> None:
        async for rec in consume(settings, args.topic, count=args.count, idle=args.timeout):
            sys.stdout.buffer.write(orjson.dumps(rec) + b"\n")
            sys.stdout.flush()

    asyncio.run(run())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from lab.learning import InProcessLearning
    from lab.replay import replay_file
    from policies.engine_factory import engine_for
    from policies.spec import load_policy
    from streams.codec import Limits

    settings = _settings()
    policy = load_policy(Path(args.policy) if args.policy else settings.policy_file)
    engine, scorer = engine_for(policy, settings)
    # --model off: the scorer never gets a model, so every decision is the rules', as on a
    # worker without LIMITSTREAM_MODEL_HMAC_KEY (its trainer publishes no snapshot).
    learning = (InProcessLearning(scorer, settings.model_kind, settings.snapshot_every_labels)
                if args.model == "learn" else None)
    t0 = time.perf_counter()
    stats = replay_file(engine, Limits.from_settings(settings),
                        Path(args.log), Path(args.output), learning, settings.partitions)
    dt = time.perf_counter() - t0
    summary = {**dataclasses.asdict(stats), "policy_version": policy.version,
               "model": learning.report() if learning is not None else "off",
               "seconds": round(dt, 3),
               "records_per_s": round(stats.records / dt) if dt else 0}
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from policies.check import check_file
    from policies.spec import PolicyError

    try:
        print(check_file(Path(args.file)))
    except (PolicyError, OSError) as exc:
        print(f"limitstream: {args.file}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from limitstream.demo import run_demo

    return run_demo(_settings(), seconds=args.seconds, users=args.users,
                    interactive=not args.plain)


def cmd_simulate(args: argparse.Namespace) -> int:
    from lab.simulate import SimConfig, simulate, truth_path, write_log, write_truth
    from streams.kafka_io import LogRecord, ensure_topics, produce

    cfg = SimConfig(users=args.users, days=args.days, seed=args.seed)
    if not args.to_broker:
        if not args.out:
            sys.exit("limitstream: simulate needs --out LOG (or --to-broker)")
        out = Path(args.out)
        n = write_log(cfg, out, progress=not args.no_progress)
        print(f"{n} events -> {out} (truth: {truth_path(out)})", file=sys.stderr)
        return 0
    settings = _need_broker(_settings())
    truth: list[dict[str, Any]] = []
    records = (LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))
               for line in simulate(cfg, truth))

    async def run() -> int:
        await ensure_topics(settings)
        return await produce(settings, records, rate=args.rate)

    n = asyncio.run(run())
    print(f"published {n} events to {settings.broker}", file=sys.stderr)
    if args.out:  # the ground truth only: the events went to the broker
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        print(f"truth: {write_truth(cfg, Path(args.out), truth)}", file=sys.stderr)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    import importlib.util

    from lab.backtest import backtest
    from lab.report import write_report
    from lab.simulate import truth_path
    from policies.spec import PolicyError

    if importlib.util.find_spec("matplotlib") is None:  # before a run of minutes, not after
        sys.exit("limitstream: the report needs matplotlib: pip install 'limitstream[report]'")
    settings = _settings()
    log = Path(args.log)
    truth = Path(args.truth) if args.truth else truth_path(log)
    policy = Path(args.policy) if args.policy else settings.policy_file
    t0 = time.perf_counter()
    try:
        data = backtest(log, truth, policy, Path(args.challenger) if args.challenger else None,
                        settings, progress=lambda m: print(f"  {m}", file=sys.stderr))
        json_path, html_path = write_report(data, Path(args.out))
    except (OSError, PolicyError) as exc:
        sys.exit(f"limitstream: {exc}")
    print(f"backtest in {time.perf_counter() - t0:.1f} s: {html_path} (data: {json_path})",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="limitstream", description=__doc__.splitlines()[0] if
                                __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a Faust worker with every agent")
    w.add_argument("--web-port", type=int, default=0, help="override LIMITSTREAM_WEB_PORT")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("broker", help="run the embedded broker (Tansu) until Ctrl-C")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    b.set_defaults(func=cmd_broker)

    pr = sub.add_parser("produce", help="publish a recorded log (JSON Lines) to the broker")
    pr.add_argument("file")
    pr.add_argument("--rate", type=float, default=0.0, help="records per second (0: as fast "
                    "as possible)")
    pr.set_defaults(func=cmd_produce)

    c = sub.add_parser("consume", help="print a topic as JSON Lines")
    c.add_argument("topic", help="logical name (limit-changes, dead-letter, ...) or real name")
    c.add_argument("--count", type=int, default=0, help="stop after this many records")
    c.add_argument("--timeout", type=float, default=10.0,
                   help="stop after this many seconds without a record")
    c.set_defaults(func=cmd_consume)

    r = sub.add_parser("replay", help="run the core over a recorded log, no broker")
    r.add_argument("log")
    r.add_argument("--output", required=True, help="JSON Lines of every output")
    r.add_argument("--policy", default="", help="policy file (default: LIMITSTREAM_POLICY_FILE)")
    r.add_argument("--model", choices=("learn", "off"), default="learn",
                   help="learn: the model learns in process from the log's labels, as the "
                   "live trainer does; off: rules alone, as a worker without "
                   "LIMITSTREAM_MODEL_HMAC_KEY")
    r.set_defaults(func=cmd_replay)

    pol = sub.add_parser("policy", help="policy files")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser("check", help="validate a policy file and print its version")
    chk.add_argument("file")
    chk.set_defaults(func=cmd_policy_check)

    sim = sub.add_parser("simulate", help="a seeded simulated portfolio: a log file and its "
                         "ground truth, or events published to the broker")
    sim.add_argument("--users", type=int, default=1000)
    sim.add_argument("--days", type=int, default=180)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--out", default="", help="JSON Lines log to write (the truth goes beside "
                     "it); with --to-broker, where the truth goes (as if the log were there)")
    sim.add_argument("--to-broker", action="store_true",
                     help="publish to LIMITSTREAM_BROKER instead of writing the log")
    sim.add_argument("--rate", type=float, default=0.0,
                     help="with --to-broker: records per second (0: as fast as possible)")
    sim.add_argument("--no-progress", action="store_true")
    sim.set_defaults(func=cmd_simulate)

    bt = sub.add_parser("backtest", help="run policies and baselines over a log; HTML + JSON "
                        "report")
    bt.add_argument("log")
    bt.add_argument("--truth", default="", help="ground truth (default: LOG's .truth.jsonl)")
    bt.add_argument("--policy", default="", help="champion policy (default: "
                    "LIMITSTREAM_POLICY_FILE)")
    bt.add_argument("--challenger", default="", help="a second policy, compared side by side")
    bt.add_argument("--out", required=True, help="directory for report.html and backtest.json")
    bt.set_defaults(func=cmd_backtest)

    d = sub.add_parser("demo", help="embedded broker + worker + simulated portfolio, live")
    d.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: Ctrl-C)")
    d.add_argument("--users", type=int, default=300)
    d.add_argument("--plain", action="store_true", help="no live terminal view: print lines")
    d.set_defaults(func=cmd_demo)

    from limitstream.redrive import add_parser as add_redrive_parser

    add_redrive_parser(sub)  # limitstream redrive: dead letters back to their source topic

    from limitstream.topics import add_parser as add_topics_parser

    add_topics_parser(sub)  # limitstream topics: create the topics (compose init, k8s job)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_gc()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
