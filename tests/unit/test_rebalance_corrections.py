"""Corrections to Faust's consumer around rebalances (agents/faust_fixes.py): an input partition
without a committed offset is read from its start after the seek that ends a rebalance, and a
record the stream skips during a rebalance is never acked, whichever stream iterator runs; the
gaps Faust's consumer fills go to the offset trace; and a table recovery that a newer
rebalance overtook completes no table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust.streams
import pytest
from aiokafka import TopicPartition
from faust.events import Event
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from agents import faust_fixes
from streams.app import create_app
from streams.offset_trace import gaps
from streams.settings import Settings


class _Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return topic.startswith("t-")


class _App:
    topics = _Topics()


class _SeekingConsumer:
    """What Consumer.perform_seek touches: committed offsets as the broker gives them, and
    the seeks it asks for."""

    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self.app = _App()
        self.committed = committed
        self.seeks: list[dict[TopicPartition, int]] = []
        self._read_offset: dict[TP, int | None] = {}
        self._committed_offset: dict[TP, int | None] = {}

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        return self.committed

    async def seek_wait(self, partitions: dict[TopicPartition, int]) -> None:
        self.seeks.append(dict(partitions))


async def test_input_partitions_without_a_commit_are_read_from_the_start() -> None:
    faust_fixes.install()
    fresh, zero, done = (TopicPartition("t-transactions", p) for p in range(3))
    changelog = TopicPartition("users-changelog", 0)
    consumer = _SeekingConsumer({fresh: None, zero: 0, done: 41, changelog: None})
    await Consumer.perform_seek(consumer)  # type: ignore[arg-type]
    # aiokafka leaves a partition without a commit wherever its position drifted (Faust
    # fetched and dropped its records while the tables recovered): rewind it.
    assert consumer.seeks == [{fresh: 0, zero: 0}]
    assert consumer._read_offset == {fresh: None, zero: 0, done: 41, changelog: None}
    assert consumer._committed_offset == {TP("t-transactions", 1): None,
                                          TP("t-transactions", 2): 41}


def _record(offset: int, generation: int) -> ConsumerMessage:
    message = ConsumerMessage("t-transactions", 0, offset, 0.0, 0, {}, b"u1", b"{}", None,
                              generation_id=generation)
    message.incref()
    return message


@pytest.mark.parametrize("iterator", ["compiled", "python"])
async def test_a_record_the_stream_skips_is_never_acked(
        iterator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if iterator == "python":
        monkeypatch.setattr(faust.streams, "_CStreamIterator", None)
    else:
        assert faust.streams._CStreamIterator is not None, "faust's compiled extension"
    faust_fixes.install()
    app = create_app(Settings(broker="kafka://127.0.0.1:1"))
    app.topics._acking_topics.add("t-transactions")
    app.consumer_generation_id = 2
    stream = app.channel().stream()
    suspended, stale, taken, last = (_record(4, 2), _record(5, 1), _record(6, 2),
                                     _record(7, 2))

    async def put(message: ConsumerMessage) -> None:
        event = Event(app, message.key, message.value, {}, message)
        await asyncio.wait_for(stream.channel.put(event), 5)

    async def first_two() -> list[bytes]:
        seen = []
        async for value in stream:
            seen.append(value)
            if len(seen) == 2:
                break
        return seen

    app.flow_control.resume()  # a new app starts suspended
    await put(suspended)
    app.flow_control.suspend()  # a rebalance begins: the stream reads `suspended` now
    reader = asyncio.ensure_future(first_two())
    await asyncio.sleep(0.05)
    app.flow_control.resume()
    for message in (stale, taken, last):  # stale: fetched in the previous generation
        await put(message)
    assert len(await asyncio.wait_for(reader, 5)) == 2
    assert not stale.acked
    assert not suspended.acked
    # The records the stream took are acked (the last as the loop left): only skips are refused.
    assert taken.acked and last.acked
    assert list(app.consumer._acked[TP("t-transactions", 0)]) == [6, 7]
    await stream.stop()


async def test_the_gaps_faust_fills_are_traced(tmp_path: Path) -> None:
    """Faust's consumer counts offsets it saw skipped as acked; the offset trace names them
    (tests/e2e/helpers.offset_report lists them when an event goes missing)."""
    path = tmp_path / "offsets.jsonl"
    faust_fixes.install()
    app = create_app(Settings(broker="kafka://127.0.0.1:1", offset_trace=str(path)))
    app.consumer_generation_id = 3
    tp = TP("t-transactions", 1)
    await app.consumer._add_gap(tp, 11, 14)
    assert gaps(path) == [("t-transactions:1", 11, 14)]
    assert [(i.begin, i.end) for i in app.consumer._gap[tp]] == [(11, 15)]  # Faust's own


class _Table:
    """A table as Faust's recovery completes it: the partitions of each completion."""

    def __init__(self) -> None:
        self.completions: list[set[TP]] = []

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        self.completions.append(set(active_tps))


async def test_an_overtaken_recovery_completes_no_table() -> None:
    """Faust ends a recovery's changelog read when a newer assignment comes, then runs its
    completion anyway: the tables' callbacks would run with the newer generation's
    partitions, beside that generation's own recovery (tests/e2e/test_overtaken_recovery.py
    shows the lost updates)."""
    faust_fixes.install()
    app = create_app(Settings(broker="kafka://127.0.0.1:1"))
    table = _Table()
    app.tables.data["users"] = table
    recovery = app.tables.recovery
    recovery.actives_for_table[table] = {TP("users-changelog", 2)}  # as generation 4 set them
    app.consumer_generation_id = 4
    try:
        await recovery.on_recovery_completed(3)
    finally:  # Faust's own completion goes on to the (not started) consumer and raises
        assert table.completions == [], "generation 3's completion ran the table's callback"
