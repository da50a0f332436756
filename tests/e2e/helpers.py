"""Helpers for end-to-end tests: publish logs, read topics, wait for the worker to catch up."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app import aiokafka_kwargs
from streams.kafka_io import LogRecord, consume, ensure_topics, logical_topics, produce
from streams.settings import Settings


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env({**os.environ, **env})


def record(topic: str, value: dict[str, Any] | None = None, *, key: str | None = "",
           raw: bytes | None = None) -> LogRecord:
    """A log record; ``key=""`` means "the value's user_id" (a well-behaved producer)."""
    if key == "" and value is not None:
        key = value.get("user_id")
    data = raw if raw is not None else orjson.dumps(value)
    return LogRecord(topic, key.encode() if key else None, data)


def publish(env: dict[str, str], records: Iterable[LogRecord]) -> Counter[str]:
    """Publish in order; returns how many records went to each logical topic."""
    settings = settings_of(env)
    recs = list(records)

    async def run() -> None:
        await ensure_topics(settings)
        await produce(settings, recs)

    asyncio.run(run())
    return Counter(r.topic for r in recs)


def read_topic(env: dict[str, str], topic: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    settings = settings_of(env)

    async def run() -> list[dict[str, Any]]:
        return [r async for r in consume(settings, topic, idle=timeout)]

    return asyncio.run(run())


def committed_total(env: dict[str, str], topic: str) -> int:
    """Sum over partitions of the consumer group's committed offsets on ``topic``."""
    settings = settings_of(env)
    real = logical_topics(settings)[topic]

    async def run() -> int:
        c = AIOKafkaConsumer(**aiokafka_kwargs(settings), group_id=settings.app_id,
                             enable_auto_commit=False)
        await c.start()
        try:
            parts = c.partitions_for_topic(real) or set()
            if not parts:
                await c._client.force_metadata_update()  # aiokafka has no public call for it
                parts = c.partitions_for_topic(real) or set()
            total = 0
            for p in parts:
                off = await c.committed(TopicPartition(real, p))
                total += off or 0
            return total
        finally:
            await c.stop()

    return asyncio.run(run())


def wait_committed(env: dict[str, str], produced: Counter[str], timeout: float = 90.0) -> None:
    """Wait until the worker group has committed past every record produced."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        last = {t: committed_total(env, t) for t in produced}
        if all(last[t] >= n for t, n in produced.items()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"committed {last}, produced {dict(produced)}")
