"""Builds a worker: the Faust app, its agents, views, metrics and model sync, from settings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry

from agents import faust_fixes
from agents.faust_monitor import ScrapeTimePrometheusMonitor, install_faust_monitor
from agents.lag import Offsets, lag_figures, population
from agents.metrics import Metrics
from agents.model_sync import ModelSync
from agents.user_agent import UserAgent
from agents.web import is_ready, register_views
from policies.engine_factory import engine_for
from policies.processor import Processor
from policies.spec import load_policy
from streams.app import aiokafka_kwargs, create_app, key_partition
from streams.codec import Limits
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How often the population and lag gauges are recomputed.
GAUGE_INTERVAL_S = 10.0


class OffsetReader:
    """Reads the consumer group's committed offsets and the partitions' first and end offsets
    from the broker, for every input partition (owned or not).

    A plain aiokafka consumer with the app's group id that never subscribes (so it never
    joins the group) and never commits: ``committed()`` is what the group holds, whichever
    member committed it, and stays right across rebalances — unlike anything this worker
    remembers of the partitions it handled.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**aiokafka_kwargs(self.settings),
                                        group_id=self.settings.app_id,
                                        enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, tps: Iterable[TopicPartition]
                   ) -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int],
                              dict[TopicPartition, int]]:
        """(committed, first, end) offsets of ``tps``; committed is None where the group
        never committed (the worker then reads the partition from its first offset)."""
        consumer = await self._started()
        parts = list(tps)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in parts))
        first = await consumer.beginning_offsets(parts)
        end = await consumer.end_offsets(parts)
        return dict(zip(parts, committed, strict=True)), first, end

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


@dataclass
class Runtime:
    """A built (not yet started) worker: the app, and what its gauge timer reads."""

    app: faust.App
    metrics: Metrics
    users: UserAgent
    monitor: ScrapeTimePrometheusMonitor
    offsets: OffsetReader
    #: user_id -> its partition (the users table and the inputs are co-partitioned).
    partition_of_user: dict[str, int] = field(default_factory=dict)
    #: Per owned input partition: (committed offset, monotonic time it was first seen there).
    commit_seen: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)


def build(settings: Settings) -> Runtime:
    faust_fixes.install()
    app = create_app(settings)
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    monitor = install_faust_monitor(app, registry)
    policy = load_policy(settings.policy_file)
    engine, scorer = engine_for(policy, settings)
    processor = Processor(engine, Limits.from_settings(settings),
                          partial(key_partition, partitions=settings.partitions))
    users = UserAgent(app, settings, processor, metrics)
    register_views(app, users, registry)
    ModelSync(app, settings, scorer, metrics, settings.model_kind)
    rt = Runtime(app, metrics, users, monitor, OffsetReader(settings))

    @app.task  # type: ignore[untyped-decorator]  # faust: no types
    async def observe_commits() -> None:
        count_refused_commits(app.consumer, metrics)

    @app.timer(interval=GAUGE_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust: no types
    async def refresh_gauges() -> None:
        # An exception in a Faust timer stops the whole worker: never let one escape.
        try:
            refresh_population(rt)
            await refresh_lag(rt)
        except Exception:
            metrics.agent_errors.labels(stage="timer").inc()
            log.exception("refreshing the population and lag gauges failed")

    @app.on_before_shutdown.connect
    async def stop_offset_reader(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await rt.offsets.stop()

    return rt


def count_refused_commits(consumer: Any, metrics: Metrics) -> None:
    """Count the offset commits the broker refuses.

    Faust's consumer calls its ``_commit(offsets)`` with a non-empty set of offsets and gets
    False when the commit did not happen (the group rebalanced meanwhile; every other commit
    error crashes the worker), then goes on as if it had: the count is the only trace.
    """
    commit: Callable[[Mapping[Any, int]], Awaitable[bool]] = consumer._commit

    async def counted(offsets: Mapping[Any, int]) -> bool:
        done = await commit(offsets)
        if not done:
            metrics.commit_failures.inc()
        return done

    consumer._commit = counted


def owned_partitions(rt: Runtime) -> set[int]:
    """The input partitions this worker owns now (every input topic is co-partitioned, so
    the transactions topic's assigned partitions are those of all of them)."""
    transactions = rt.users.topic_names["transactions"]
    return {tp.partition for tp in rt.app.consumer.assignment() if tp.topic == transactions}


def refresh_population(rt: Runtime) -> None:
    """Users per status and stage, total limit extended, table size: of the users of the
    partitions this worker owns now.

    The agent keeps a small per-user summary as it stores states, rebuilt from the local
    table after a rebalance (:meth:`~agents.user_agent.UserAgent.sync_generation`). The
    memory store keeps the keys of revoked partitions, so the summary may hold users another
    worker serves now: they are counted by their owner only (:func:`agents.lag.population`).
    """
    users = rt.users
    users.sync_generation()
    partitions = users.settings.partitions
    cache = rt.partition_of_user

    def partition_of(uid: str) -> int:
        part = cache.get(uid)
        if part is None:
            part = cache[uid] = key_partition(uid.encode(), partitions)
        return part

    counted = population(users.summary, owned_partitions(rt), partition_of)
    m = rt.metrics
    _replace_series(m.users_by_status, {k: float(n) for k, n in counted.by_status.items()})
    m.limit_extended.set(counted.limit_extended)
    m.table_users.set(counted.users)
    m.pending_labels.set(counted.pending_labels)
    m.ready.set(1 if is_ready(rt.app) else 0)


def _replace_series(gauge: Any, values: Mapping[tuple[str, ...], float]) -> None:
    """Set ``values`` on ``gauge`` and remove every other label set (revoked partitions)
    after, never before, so a scrape in between sees no gap."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for family in gauge.collect():
        for sample in family.samples:
            labels = tuple(sample.labels[name] for name in gauge._labelnames)
            if labels not in values:
                gauge.remove(*labels)


async def refresh_lag(rt: Runtime) -> None:
    """Lag per input partition from the broker (the group's committed offsets and the
    partitions' end offsets, :func:`agents.lag.lag_figures`):

    * ``limitstream_consumer_lag``, ``..._lag_seconds`` and ``..._commit_stalled_seconds``:
      the partitions this worker owns (the label sets of revoked partitions go);
    * ``limitstream_group_lag``: every input partition, owned by anyone or by nobody;
    * ``limitstream_assigned_partitions`` and ``limitstream_topic_partitions`` per topic.
    """
    app, m, users = rt.app, rt.metrics, rt.users
    consumer = app.consumer
    owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    tps = []
    for topic in users.logical:  # the real names of the input topics
        count = consumer.topic_partitions(topic) or users.settings.partitions
        m.topic_partitions.labels(topic=topic).set(count)
        m.assigned_partitions.labels(topic=topic).set(sum(1 for t, _ in owned if t == topic))
        tps += [TopicPartition(topic, p) for p in range(count)]
    committed, first, end = await rt.offsets.read(tps)
    offsets = {(tp.topic, tp.partition): Offsets(committed[tp], first.get(tp, 0),
                                                 end.get(tp, 0)) for tp in tps}
    applied = rt.monitor.applied
    figures = lag_figures(offsets, owned, lambda t, p: applied.get(TP(t, p)),
                          rt.commit_seen, time.time(), time.monotonic())
    rt.commit_seen = figures.seen
    _replace_series(m.group_lag, figures.group)
    _replace_series(m.consumer_lag, figures.lag)
    _replace_series(m.consumer_lag_seconds, figures.seconds)
    _replace_series(m.commit_stalled_seconds, figures.stalled)


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGTERM/SIGINT. (It does not get to send LeaveGroup: the others
    take its partitions over at the session timeout, see streams/app.py.)"""
    rt = build(settings)
    # web host/port/bind come from the app's configuration (streams.app.create_app).
    worker = faust.Worker(rt.app, loglevel=settings.log_level)
    # At log level warn/error Faust's terminal spinner sets the root logger to DEBUG: every
    # debug call in faust and aiokafka builds a record (about a fifth of the time).
    worker.spinner = None
    worker.execute_from_commandline()
