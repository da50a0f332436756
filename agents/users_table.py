"""The user table: a Faust table, with four corrections that exactly-once state depends on.

* **Key-partitioned stores.** The agent writes a batch's states after the batch (see
  agents/user_agent.py), with the changelog partition chosen by the key
  (``use_partitioner``). Faust's RocksDB store, though, files a key under the partition of the
  *current event* — in a batch, the last one — which would put users in the wrong partition's
  database, and a rebalance would then drop or keep the wrong users; its memory store learns
  a key's partition only from recovery, so users first stored on a worker stayed in its
  memory after they moved away. Both stores here file each key under its own partition, as
  the changelog does.
* **Recovery to the true end of the changelog.** Faust recovers a changelog partition up to
  the end offset the broker reports. The embedded broker (Tansu 0.6) reports the end of a
  partition whose last write was a batch of N records as the batch's first offset + 1
  (tests/e2e/test_changelog_fence.py: 24 records at offset 0, end offset 1), so the last
  records of the batch — the newest user states — would be skipped, and their inputs,
  already committed, never replayed: lost updates. So after Faust's recovery the table
  writes a *fence* (a tombstone under a key no user id can have) to each changelog partition
  it now owns and reads on from where Faust stopped until it has read its own fence. The
  fence's offset comes from the produce response, not from the end offset, and the new owner
  is the partition's only writer, so everything before the fence is the whole log. (Reading
  until a fetch brings nothing for a while, the first version, can stop early when the
  broker is slow.) On Apache Kafka the tail holds just the fence; compaction drops the
  tombstones.
* **Only the current recovery completes.** Faust abandons a recovery that a newer rebalance
  overtakes but lets the table's completion callback run on; a callback that a newer
  rebalance overtook — before it started or while it read — changes nothing
  (tests/e2e/test_superseded_recovery.py, tests/unit/test_users_table.py).
* **No late changelog records over the agent's states.** Faust applies changelog records it
  fetched past the end of an active partition's recovery whenever its recovery buffer,
  shared with the standby partitions' records, fills up — over the states the agent stored
  since, or flushes them when the next rebalance starts; once the table has applied its
  tail, records of the partitions it serves are dropped until the next recovery starts
  (tests/unit/test_users_table.py, tests/e2e/test_multiworker.py::test_repeated_sigkills).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata
from faust.exceptions import ConsistencyError
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.recovery import Recovery
from faust.types import TP, EventT
from faust.types.tuples import ConsumerMessage
from yarl import URL

from streams.app import key_partition

log = logging.getLogger(__name__)

#: The recovery fence's key: it starts with a NUL byte, which no user id contains (the codec
#: allows letters, digits and ``_.:@/-``), so the tombstone deletes nothing.
FENCE_KEY: Final = b"\x00recovery-fence"
#: The longest the read up to the fences may take before recovery is declared failed.
FENCE_READ_TIMEOUT_S: Final = 120.0


class KeyPartitionedRocksDBStore(RocksDBStore):
    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = key_partition(key, self.table.partitions or self.app.conf.topic_partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


class KeyPartitionedMemoryStore(MemoryStore):  # type: ignore[type-arg]
    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._key_partition[key] = key_partition(
            key, self.table.partitions or self.app.conf.topic_partitions)
        self.data[key] = value


@dataclass(frozen=True, slots=True)
class _ChangelogEvent:
    """The parts of a changelog event that Faust's stores read when applying a batch."""

    key: bytes
    value: bytes | None
    message: ConsumerMessage


async def read_to_fences(kafka: Mapping[str, Any], starts: Mapping[TopicPartition, int],
                         fences: Mapping[TopicPartition, int],
                         timeout_s: float = FENCE_READ_TIMEOUT_S) -> list[ConsumerRecord[Any, Any]]:
    """Every record of each partition from ``starts[tp]`` up to and including the one at
    ``fences[tp]``, in offset order per partition.

    Ends when each partition's position is past its fence, never on a quiet fetch; raises
    :class:`TimeoutError` if that takes longer than ``timeout_s``.
    """
    pending = {tp for tp in fences if starts[tp] <= fences[tp]}
    if not pending:
        return []
    consumer = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, starts[tp])
        out: list[ConsumerRecord[Any, Any]] = []
        async with asyncio.timeout(timeout_s):
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=200)
                for tp, records in batch.items():
                    out += [r for r in records if r.offset <= fences[tp]]
                pending = {tp for tp in pending if await consumer.position(tp) <= fences[tp]}
        return out
    finally:
        await consumer.stop()


def _or_minus_one(offset: int | None) -> int:
    return -1 if offset is None else offset


def check_persisted_offsets(persisted: Mapping[TP, int | None],
                            fences: Mapping[TopicPartition, int]) -> None:
    """Faust's recovery consistency check, against the fence instead of the reported end.

    A local database that has applied a changelog record at or past the fence — the newest
    record of the partition — belongs to a changelog that has since lost data (topics deleted
    or recreated without the databases): recovering from it would serve states that the log
    does not hold. Faust checks the persisted offset against the end offset the broker
    reports; the embedded broker under-reports it, so Faust's check (off in streams/app.py)
    failed every RocksDB worker's restart there, and this one replaces it for the partitions a
    worker owns. (Standby partitions are not fenced and go unchecked.)
    """
    for tp, offset in persisted.items():
        fence = fences[TopicPartition(tp.topic, tp.partition)]
        if offset is not None and offset >= fence:
            raise ConsistencyError(
                f"the local database of {tp.topic}[{tp.partition}] has applied changelog "
                f"offset {offset}, but the partition's newest record is at {fence}: the "
                "changelog has lost data since (topics deleted or recreated without the "
                "databases); remove the partition's database and restart to recover it")


class UsersTable(faust.Table[bytes, bytes]):
    #: Connection settings for reading the changelog's tail (set by :func:`users_table`).
    kafka: dict[str, Any]
    #: Partitions whose users the agent serves, from the moment this table has applied their
    #: changelog's tail until the next rebalance's recovery starts: their changelog is then
    #: the agent's own writes, and a record of them that Faust still applies is stale.
    _owned: frozenset[int] = frozenset()
    #: The app's rebalance count when this table was last assigned its partitions (a
    #: rebalance counts when it starts, at the revoke): a recovery callback is the current
    #: one only while no newer rebalance has started since.
    _assigned_in: int = 0

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Faust's recovery keeps one buffer per table for active and standby records alike.
        Records of active partitions fetched past the end of their recovery (most of a batch,
        on a broker that under-reports end offsets) wait there until standby records fill
        the buffer, or until the next rebalance flushes it before anything else — seconds or
        minutes later, while the agent stores newer states of the same users — and then
        overwrote them (lost updates, tests/e2e/test_multiworker.py; an in-flight batch
        finished during the revoke could even build on the stale state and store it). Those
        records are inside the tail this table applied itself (:meth:`on_recovery_completed`),
        so they are dropped."""
        if self._owned:
            batch = [event for event in batch if event.message.partition not in self._owned]
        super().apply_changelog_batch(batch)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        # The recovery that follows applies these partitions' records again, from where
        # Faust's recovery last read them.
        self._owned = frozenset()
        self._assigned_in = self.app.rebalancing_count
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def put(self, key: bytes, value: bytes) -> Awaitable[RecordMetadata]:
        """``table[key] = value``; returns the changelog record's delivery future.

        The record goes straight to the app's producer, in the key's partition. Faust's own
        path (``send_changelog``: a FutureMessage, the producer buffer, sensors, callbacks)
        cost more than the rest of the event's processing (bench/levers.py). The agent awaits
        the future before the batch is acked, then hands the results to :meth:`delivered`.
        Faust's own guarantee would be weaker anyway: it flushes its producer buffer before
        committing offsets, but that flush gives up when no record leaves the buffer for
        100 ms (``ProducerBuffer.flush_atmost``).
        """
        partition = key_partition(key, self.partitions or self.app.conf.topic_partitions)
        fut = await self.app.producer.send(self.changelog_topic.get_topic_name(), key, value,
                                           partition, None, None)
        self.data[key] = value
        return fut

    def delivered(self, records: Iterable[RecordMetadata]) -> None:
        """Note the newest delivered changelog offset of each partition as the store's
        persisted offset (what Faust's send callback did; the RocksDB store recovers from it)."""
        newest: dict[int, int] = {}
        for r in records:
            newest[r.partition] = max(r.offset, newest.get(r.partition, -1))
        topic = self.changelog_topic.get_topic_name()
        for partition, offset in newest.items():
            self.data.set_persisted_offset(TP(topic, partition), offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # Faust runs this callback in a task of its own and, when a newer rebalance starts
        # meanwhile, abandons the recovery but not the task: left alone, a superseded tail
        # (and the memory store's drop of the keys outside that recovery's partitions) would
        # land in the table whenever its read ends — after the next generation's recovery,
        # over the states its agent had stored since. So a callback that a newer rebalance
        # has overtaken changes nothing: that rebalance recovers the table again. Overtaken
        # counts from the assignment this recovery serves, not from the callback's start: a
        # recovery whose reads end between a newer rebalance's revoke and its assignment
        # starts its callback after that rebalance has begun, and its tail and its clean-up
        # could then land after the newer assignment (the memory store dropping the users of
        # partitions the newer recovery was restoring).
        rebalance = self._assigned_in
        # After this callback Faust resumes the input partitions and then awaits their seek
        # to the committed offsets, with its flow still running from the changelog reads:
        # records fetched in between reached the agent before the seek, whose reset of the
        # consumer's read offsets then made Faust count the records after them as a skipped
        # "gap" — commits stalled about 1 000 offsets behind (tests/e2e/test_multiworker.py;
        # a gap over records nobody processed would be a loss). Stopped here, the flow
        # starts when Faust resumes it, after the seek.
        self.app.consumer.stop_flow()
        self.app.flow_control.suspend()
        try:
            tail = await self._read_tail(active_tps)
        except Exception as exc:
            if self.app.rebalancing_count != rebalance:
                log.info("changelog tail read of a superseded recovery failed: %r", exc)
                return
            # Nobody reads this task's exception: going on would serve states that miss
            # their newest writes, so the worker stops instead.
            log.exception("changelog recovery past the reported end failed")
            await self.app.crash(exc)
            raise
        if self.app.rebalancing_count != rebalance:
            log.warning("a newer rebalance superseded this recovery: its changelog tail "
                        "(%d records) is discarded", len(tail))
            return
        if tail:
            log.warning("recovered %d changelog records beyond the broker's reported end "
                        "offsets (a broker that under-reports them)", len(tail))
            super().apply_changelog_batch(tail)  # type: ignore[arg-type]  # duck-typed events
        # The tail holds whatever Faust fetched past the reported end: from now on, Faust's
        # records of these partitions are stale (see apply_changelog_batch).
        self._owned = frozenset(tp.partition for tp in active_tps)
        await super().on_recovery_completed(active_tps, standby_tps)

    async def _read_tail(self, active_tps: set[TP]) -> list[_ChangelogEvent]:
        """The changelog records of ``active_tps`` past where Faust's recovery stopped, up to
        the fences this worker writes (fences excluded)."""
        if not active_tps:
            return []
        # Where Faust's recovery stopped: its highwater (the reported end offset - 1), or the
        # RocksDB store's persisted offset when that is further on (it had nothing to read).
        recovery = cast(Recovery, self.app.tables.recovery)  # type: ignore[attr-defined]
        persisted = {tp: self.data.persisted_offset(tp) for tp in active_tps}
        starts = {TopicPartition(tp.topic, tp.partition):
                  max(recovery.active_highwaters.get(tp, -1), _or_minus_one(persisted[tp])) + 1
                  for tp in active_tps}
        fences = {}
        for tp in starts:
            # Sent directly, not by send_changelog: its callback would record the fence as
            # the RocksDB store's persisted offset before the tail is applied.
            sent = await self.changelog_topic.send(key=FENCE_KEY, value=None,
                                                   partition=tp.partition)
            fences[tp] = (await sent).offset
        check_persisted_offsets(persisted, fences)
        records = await read_to_fences(self.kafka, starts, fences)
        return [_ChangelogEvent(r.key, r.value, ConsumerMessage(
            topic=r.topic, partition=r.partition, offset=r.offset,
            timestamp=r.timestamp / 1000, timestamp_type=r.timestamp_type,
            headers=r.headers, key=r.key, value=r.value, checksum=None))
            for r in records if r.key != FENCE_KEY]

    def _new_store_by_url(self, url: str | URL) -> Any:
        store = {"rocksdb": KeyPartitionedRocksDBStore,
                 "memory": KeyPartitionedMemoryStore}.get(URL(str(url)).scheme)
        if store is None:
            return super()._new_store_by_url(url)
        return store(
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
