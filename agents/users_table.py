"""The user table: a Faust table, with two corrections that exactly-once state depends on.

* **Key-partitioned RocksDB.** The agent writes a batch's states after the batch (see
  agents/user_agent.py), with the changelog partition chosen by the key
  (``use_partitioner``). Faust's RocksDB store, though, files a key under the partition of the
  *current event* — in a batch, the last one — which would put users in the wrong partition's
  database, and a rebalance would then drop or keep the wrong users. This store files each key
  under its own partition, as the changelog does.
* **Recovery to the true end of the changelog.** Faust recovers a changelog partition up to
  the end offset the broker reports. The embedded broker (Tansu 0.6) reports the end of a
  partition whose last write was a batch of N records as the batch's first offset + 1
  (measured: 24 records, end offset 15), so the last records of the batch — the newest user
  states — would be skipped, and their inputs, already committed, never replayed: lost
  updates. After Faust's recovery, the table reads each active changelog partition on from
  the reported end until the broker has nothing more, and applies what it finds. On Apache
  Kafka there is never anything there, and this costs one empty fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from yarl import URL

from streams.app import key_partition

log = logging.getLogger(__name__)

#: How long the tail read waits for a record before it decides the changelog has ended.
TAIL_POLL_MS: Final = 300


class KeyPartitionedRocksDBStore(RocksDBStore):
    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = key_partition(key, self.table.partitions or self.app.conf.topic_partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


@dataclass(frozen=True, slots=True)
class _ChangelogEvent:
    """The parts of a changelog event that Faust's stores read when applying a batch."""

    key: bytes
    value: bytes | None
    message: ConsumerMessage


class UsersTable(faust.Table[bytes, bytes]):
    #: Connection settings for reading the changelog's tail (set by :func:`users_table`).
    kafka: dict[str, Any]

    def put(self, key: bytes, value: bytes) -> Awaitable[Any]:
        """``table[key] = value``, returning the changelog record's delivery future.

        The agent awaits it before the batch is acked. Faust's own guarantee is weaker: it
        flushes its producer buffer before committing offsets, but that flush gives up when
        no record leaves the buffer for 100 ms (``ProducerBuffer.flush_atmost``), so under
        load an offset could be committed ahead of the state that applied it.
        """
        fut = self.send_changelog(self.partition_for_key(key), key, value)
        # eager partitioning: the producer chose the partition already.
        self._maybe_set_key_ttl(key, cast(int, fut.message.partition))
        self._sensor_on_set(self, key, value)
        self.data[key] = value
        return cast(Awaitable[Any], fut)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await self._recover_tail(active_tps)
        await super().on_recovery_completed(active_tps, standby_tps)

    async def _recover_tail(self, active_tps: set[TP]) -> None:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in active_tps]
        if not tps:
            return
        consumer = AIOKafkaConsumer(**self.kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
            tail: list[_ChangelogEvent] = []
            while True:
                batch = await consumer.getmany(timeout_ms=TAIL_POLL_MS)
                if not batch:
                    break
                for records in batch.values():
                    tail += [_ChangelogEvent(r.key, r.value, ConsumerMessage(
                        topic=r.topic, partition=r.partition, offset=r.offset,
                        timestamp=r.timestamp / 1000, timestamp_type=r.timestamp_type,
                        headers=r.headers, key=r.key, value=r.value, checksum=None))
                        for r in records]
            if tail:
                log.warning("recovered %d changelog records beyond the broker's reported end "
                            "offsets (a broker that under-reports them)", len(tail))
                self.apply_changelog_batch(tail)  # type: ignore[arg-type]  # duck-typed events
        finally:
            await consumer.stop()
    def _new_store_by_url(self, url: str | URL) -> Any:
        if URL(str(url)).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        return KeyPartitionedRocksDBStore(
            url, self.app, self, table_name=self.name, key_type=self.key_type,
            key_serializer=self.key_serializer, value_serializer=self.value_serializer,
            value_type=self.value_type, loop=self.loop, options=self.options)


def users_table(app: faust.App, partitions: int, kafka: dict[str, Any]) -> UsersTable:
    """The ``users`` table: raw user_id keys, raw state values, changelog partitioned by key."""
    table = UsersTable(app, name="users", default=None, beacon=app.tables.beacon,
                       partitions=partitions, use_partitioner=True,
                       # bytes key/value types make Faust use the raw codec for the
                       # changelog *and* its recovery (a Schema alone leaves recovery on JSON).
                       key_type=bytes, value_type=bytes)
    table.kafka = kafka
    app.tables.add(table)
    return table
