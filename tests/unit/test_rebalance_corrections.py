"""A correction to Faust's consumer around rebalances (streams/app.py): an input partition
without a committed offset is read from its start after the seek that ends a rebalance."""

from __future__ import annotations

from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.types import TP

from streams.app import create_app
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
    create_app(Settings(broker="kafka://127.0.0.1:1"))  # installs the patches
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
