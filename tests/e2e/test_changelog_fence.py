"""Recovery reads a changelog partition to its fence, not to the end offset the broker reports.

The embedded broker reports the end of a partition whose last write was a multi-record batch
as the batch's first offset + 1; a recovery that stopped there (or stopped on a quiet fetch)
lost the newest user states. agents/users_table.py writes a fence record and reads up to its
offset, which the produce response gives exactly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.users_table import FENCE_KEY, read_to_fences
from streams.app import aiokafka_kwargs
from tests.e2e.helpers import settings_of

pytestmark = pytest.mark.broker

RECORDS = 24


async def _write_batch_then_fence(kafka: dict[str, Any], topic: str
                                  ) -> tuple[int, int, int]:
    """One batch of RECORDS records, then a fence; returns (first offset, reported end offset
    after the batch, fence offset)."""
    producer = AIOKafkaProducer(**kafka, linger_ms=200, max_batch_size=1 << 20)
    await producer.start()
    try:
        sent = [await producer.send(topic, key=f"u{i:03d}".encode(), value=b"s" * 100,
                                    partition=0) for i in range(RECORDS)]
        first = min([(await f).offset for f in sent])
        ends = await _end_offset(kafka, topic)
        fence = await (await producer.send(topic, key=FENCE_KEY, value=None, partition=0))
        return first, ends, fence.offset
    finally:
        await producer.stop()


async def _create(kafka: dict[str, Any], topic: str) -> None:
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _end_offset(kafka: dict[str, Any], topic: str) -> int:
    consumer = AIOKafkaConsumer(**kafka, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def test_read_to_fences_returns_every_record_of_the_last_batch(
        kafka_env: dict[str, str]) -> None:
    kafka = aiokafka_kwargs(settings_of(kafka_env))
    topic = kafka_env["LIMITSTREAM_TOPIC_PREFIX"] + "fence-test"
    asyncio.run(_create(kafka, topic))
    tp = TopicPartition(topic, 0)

    first, reported_end, fence = asyncio.run(_write_batch_then_fence(kafka, topic))
    assert fence == first + RECORDS, "the batch's offsets are contiguous, the fence follows"
    print(f"\nbatch of {RECORDS} at {first}; reported end after it {reported_end} "
          f"(true end {first + RECORDS}); fence at {fence}")

    # From the reported end: the records it hides, then the fence, nothing more.
    start = min(reported_end, fence)
    got = asyncio.run(read_to_fences(kafka, {tp: start}, {tp: fence}))
    assert [r.offset for r in got] == list(range(start, fence + 1))
    assert got[-1].key == FENCE_KEY and got[-1].value is None
    assert [r.key for r in got[:-1]] == [f"u{i:03d}".encode()
                                         for i in range(start - first, RECORDS)]

    # From the start: the whole partition.
    got = asyncio.run(read_to_fences(kafka, {tp: 0}, {tp: fence}))
    assert [r.offset for r in got] == list(range(0, fence + 1))

    # A start past the fence reads nothing; a fence that is never written times out.
    assert asyncio.run(read_to_fences(kafka, {tp: fence + 1}, {tp: fence})) == []
    with pytest.raises(TimeoutError):
        asyncio.run(read_to_fences(kafka, {tp: 0}, {tp: fence + 5}, timeout_s=1.0))
