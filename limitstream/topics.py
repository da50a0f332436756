"""``limitstream topics``: create every topic limitstream uses, with its configuration.

The compose stack's ``kafka-init`` service and the Kubernetes job ``limitstream-topics``
run it before the workers start; a worker runs the same code itself
(:func:`streams.kafka_io.ensure_topics`), so topic settings have one place,
:func:`streams.kafka_io.topic_specs`. Idempotent: an existing topic is left as it is (change
its configuration with ``kafka-configs.sh``; its partition count needs a planned migration,
since users would move between partitions).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def describe(settings: Any) -> list[str]:
    """One line per topic: name, partitions, replication, configuration."""
    from streams.kafka_io import topic_specs

    return [f"{spec.name} partitions={spec.num_partitions} "
            f"replication={spec.replication_factor} "
            + " ".join(f"{k}={v}" for k, v in sorted(spec.topic_configs.items()))
            for spec in topic_specs(settings)]


def cmd_topics(args: argparse.Namespace) -> int:
    from limitstream.cli import _need_broker, _settings
    from streams.kafka_io import ensure_topics

    settings = _settings()
    if not args.dry_run:
        asyncio.run(ensure_topics(_need_broker(settings)))
    for line in describe(settings):
        print(line, flush=True)
    return 0


def add_parser(sub: Any) -> None:
    """The ``topics`` sub-command of the CLI."""
    t = sub.add_parser("topics", help="create every topic (idempotent) and print the "
                       "configuration each is created with")
    t.add_argument("--dry-run", action="store_true",
                   help="print the topics and their configuration, create nothing")
    t.set_defaults(func=cmd_topics)
