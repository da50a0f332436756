"""Builds a worker: the Faust app, its agents, views, metrics and model sync, from settings."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial

import faust
from prometheus_client import CollectorRegistry

from agents import faust_fixes
from agents.faust_monitor import install_faust_monitor
from agents.metrics import Metrics
from agents.model_sync import ModelSync
from agents.user_agent import UserAgent
from agents.web import is_ready, register_views
from policies.engine_factory import engine_for
from policies.processor import Processor
from policies.spec import load_policy
from streams.app import create_app, key_partition
from streams.codec import Limits
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How often the population gauges are recomputed from the local table.
GAUGE_INTERVAL_S = 10.0


@dataclass
class Runtime:
    """A built (not yet started) worker: the app, and what its gauge timer reads."""

    app: faust.App
    metrics: Metrics
    users: UserAgent


def build(settings: Settings) -> Runtime:
    faust_fixes.install()
    app = create_app(settings)
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    install_faust_monitor(app, registry)
    policy = load_policy(settings.policy_file)
    engine, scorer = engine_for(policy, settings)
    processor = Processor(engine, Limits(settings.currency, settings.max_message_bytes),
                          partial(key_partition, partitions=settings.partitions))
    users = UserAgent(app, settings, processor, metrics)
    register_views(app, users, registry)
    ModelSync(app, settings, scorer, metrics, settings.model_kind)
    rt = Runtime(app, metrics, users)

    @app.timer(interval=GAUGE_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust: no types
    async def refresh_gauges() -> None:
        # An exception in a Faust timer stops the whole worker: never let one escape.
        try:
            refresh_population(rt)
            await refresh_lag(rt)
        except Exception:
            metrics.agent_errors.labels(stage="timer").inc()
            log.exception("refreshing the population gauges failed")

    return rt


def refresh_population(rt: Runtime) -> None:
    """Users per status and stage, total limit extended, table size.

    The agent keeps a small per-user summary as it stores states, rebuilt from the local
    table after a rebalance (:meth:`~agents.user_agent.UserAgent.sync_generation`).
    """
    users = rt.users
    users.sync_generation()
    counts: Counter[tuple[str, str]] = Counter()
    total_limit = pending = 0
    for status, stage, limit, waiting in users.summary.values():
        pending += waiting
        # stage "" outside probation (the dashboard's convention)
        counts[(status, str(stage) if stage else "")] += 1
        total_limit += limit
    m = rt.metrics
    m.users_by_status.clear()
    for (status, stage_label), c in counts.items():
        m.users_by_status.labels(status=status, stage=stage_label).set(c)
    m.limit_extended.set(total_limit)
    m.table_users.set(len(users.summary))
    m.pending_labels.set(pending)
    m.ready.set(1 if is_ready(rt.app) else 0)


async def refresh_lag(rt: Runtime) -> None:
    """Consumer lag per input partition this worker owns: the high-water mark less the next
    offset to handle; the embedded broker has reported stale high-water marks, hence the
    floor at zero."""
    m, consumer, users = rt.metrics, rt.app.consumer, rt.users
    inputs = set(users.logical)
    m.consumer_lag.clear()  # partitions revoked since the last refresh must not linger
    for tp in consumer.assignment():
        if tp.topic not in inputs:
            continue
        handled = users.handled.get((tp.topic, tp.partition))
        highwater = consumer.highwater(tp)
        if highwater is None or highwater < 0:
            continue  # nothing fetched from it yet
        next_offset = handled + 1 if handled is not None else await consumer.position(tp)
        lag = max(0, highwater - (next_offset or 0))
        m.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM/SIGINT. (It does not get to send LeaveGroup: the others
    take its partitions over at the session timeout, see streams/app.py.)"""
    rt = build(settings)
    # web host/port/bind come from the app's configuration (streams.app.create_app).
    worker = faust.Worker(rt.app, loglevel=settings.log_level)
    # At log level warn/error Faust's terminal spinner sets the root logger to DEBUG: every
    # debug call in faust and aiokafka then builds a record (about a fifth of the time).
    worker.spinner = None
    worker.execute_from_commandline()
