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

import orjson

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
    from policies.spec import load_policy
    from streams.codec import Limits
    from streams.learning import InProcessLearning, engine_for
    from streams.replay import replay_file

    settings = _settings()
    policy = load_policy(Path(args.policy) if args.policy else settings.policy_file)
    engine, scorer = engine_for(policy, settings)
    learning = InProcessLearning(scorer, settings.model_kind, settings.snapshot_every_labels)
    t0 = time.perf_counter()
    stats = replay_file(engine, Limits(settings.currency, settings.max_message_bytes),
                        Path(args.log), Path(args.output), learning)
    dt = time.perf_counter() - t0
    summary = {**dataclasses.asdict(stats), "policy_version": policy.version,
               "model": learning.report(), "seconds": round(dt, 3),
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
    from streams.demo import run_demo

    return run_demo(_settings(), seconds=args.seconds, users=args.users,
                    interactive=not args.plain)


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
    r.set_defaults(func=cmd_replay)

    pol = sub.add_parser("policy", help="policy files")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    chk = pol_sub.add_parser("check", help="validate a policy file and print its version")
    chk.add_argument("file")
    chk.set_defaults(func=cmd_policy_check)

    d = sub.add_parser("demo", help="embedded broker + worker + simulated portfolio, live")
    d.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: Ctrl-C)")
    d.add_argument("--users", type=int, default=300)
    d.add_argument("--plain", action="store_true", help="no live terminal view: print lines")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
