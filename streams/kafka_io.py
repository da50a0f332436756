"""Plain aiokafka clients for the CLI: create topics, publish a recorded log, read a topic.

The recorded log is JSON Lines, one record per line::

    {"topic": "transactions", "key": "u000001", "value": {...event...}}

``topic`` is a logical name (``transactions``, ``repayments``, ``account-events``,
``limit-commands``; the settings map it to the real topic) or a literal topic name. A test
harness may give ``value_raw`` (a string published byte for byte) instead of ``value``, to
publish malformed input on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.app import aiokafka_kwargs
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line of a recorded log."""

    topic: str
    key: bytes | None
    value: bytes
    #: The record's timestamp (epoch ms) if the log kept it (``timestamp``, as ``consume``
    #: prints it): the replay checks event times against it as the worker does. 0: none.
    timestamp_ms: int = 0


def logical_topics(settings: Settings) -> dict[str, str]:
    """Logical name (the ``Topics`` field, or its default topic name) -> real topic name."""
    t = settings.topics
    names = {f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
    defaults = {f.name: f.default for f in dataclasses.fields(t)}
    return {**names, **{str(defaults[k]): v for k, v in names.items()}}


def parse_log_line(line: bytes | str) -> LogRecord:
    obj = orjson.loads(line)
    key = obj.get("key")
    if "value_raw" in obj:
        value = obj["value_raw"].encode()
    elif "value_b64" in obj:
        value = base64.b64decode(obj["value_b64"])
    else:
        value = orjson.dumps(obj["value"])
    timestamp = obj.get("timestamp")
    return LogRecord(obj["topic"], key.encode() if isinstance(key, str) else None, value,
                     timestamp if isinstance(timestamp, int) and timestamp > 0 else 0)


def read_log(path: Path) -> Iterator[LogRecord]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield parse_log_line(line)


DAY_MS = 86_400_000
#: Days each topic keeps its records; the audit topic ``decisions`` keeps them for the
#: settings' ``audit_retention_days`` (years), the snapshots topic is compacted instead.
RETENTION_DAYS: Final = {
    "transactions": 7,
    "repayments": 7,
    "account_events": 7,
    "limit_commands": 30,  # operators' commands: kept as long as the outputs they caused
    "rekeyed": 7,
    "limit_changes": 30,
    "account_status": 30,
    "dead_letter": 30,  # time to fix a producer and re-drive its records
    "labels": 30,
}


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Every topic limitstream uses, with its partition count and configuration: the one
    place for them (the worker, ``limitstream topics`` in the compose init and in the
    Kubernetes job all create topics from here).

    Inputs and outputs are co-partitioned (same count, keyed by user_id); the labels and
    snapshots topics have one partition (one trainer; the newest snapshot). Durability:
    ``min.insync.replicas`` (with acks=all a write survives the loss of a broker and is
    refused rather than kept on a single copy) and no unclean leader election (an
    out-of-sync replica never becomes leader and drops acknowledged writes).
    """
    t, n, rf = settings.topics, settings.partitions, settings.replication_factor
    durable = {"min.insync.replicas": str(settings.topic_min_insync_replicas),
               "unclean.leader.election.enable": "false"}

    def deleting(days: int) -> dict[str, str]:
        # Explicit retention: Tansu (the embedded broker) and librdkafka clients want it.
        return {**durable, "cleanup.policy": "delete", "retention.ms": str(days * DAY_MS),
                "retention.bytes": "-1"}

    specs = [NewTopic(getattr(t, field), 1 if field == "labels" else n, rf,
                      topic_configs=deleting(days)) for field, days in RETENTION_DAYS.items()]
    specs.append(NewTopic(t.decisions, n, rf,
                          topic_configs=deleting(settings.audit_retention_days)))
    # Compacted: the latest snapshot per key is what a starting worker reads; a snapshot can
    # exceed the broker's 1 MiB default record size.
    specs.append(NewTopic(t.model_snapshots, 1, rf, topic_configs={
        **durable, "cleanup.policy": "compact", "retention.ms": "-1",
        "min.compaction.lag.ms": str(DAY_MS), "max.message.bytes": str(16 * 1024 * 1024)}))
    return specs


async def ensure_topics(settings: Settings) -> None:
    """Create the topics that do not exist yet (Kafka's auto-create would get counts wrong)."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if missing:
            # Another process may create them in between: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def produce(settings: Settings, records: Iterable[LogRecord],
                  rate: float = 0.0) -> int:
    """Publish ``records`` in order (``rate`` records/s when > 0); returns the count."""
    names = logical_topics(settings)
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings), linger_ms=5,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    n = 0
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for rec in records:
            # A recorded timestamp is kept (CreateTime), so the worker checks event times
            # against the same clock as the replay of the log; else the broker sets now.
            await producer.send(names.get(rec.topic, rec.topic), rec.value, key=rec.key,
                                timestamp_ms=rec.timestamp_ms or None)
            n += 1
            if rate > 0 and n % 100 == 0:
                ahead = t0 + n / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return n


def record_dict(r: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """A consumed record as :func:`consume` yields it: the value as JSON, or as base64 when
    it is not JSON (bad input is shown, not hidden)."""
    try:
        value: Any = orjson.loads(r.value) if r.value is not None else None
    except orjson.JSONDecodeError:
        value = {"value_b64": base64.b64encode(r.value or b"").decode()}
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset,
            "timestamp": r.timestamp,
            "key": r.key.decode("utf-8", "replace") if r.key else None, "value": value}


async def consume(settings: Settings, topic: str, *, count: int = 0, idle: float = 10.0,
                  from_beginning: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Yield the records of ``topic`` as dicts until ``count`` records or ``idle`` seconds
    without a new record. No consumer group: reading commits nothing."""
    names = logical_topics(settings)
    consumer = AIOKafkaConsumer(
        names.get(topic, topic), **aiokafka_kwargs(settings), group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    try:
        while not count or seen < count:
            batch = await consumer.getmany(timeout_ms=int(idle * 1000))
            if not batch:
                return
            for tp_records in batch.values():
                for r in tp_records:
                    yield record_dict(r)
                    seen += 1
                    if count and seen >= count:
                        return
    finally:
        await consumer.stop()
