"""Event-time order across co-partitioned topics: the merge the worker and the replay share.

Kafka orders records per partition only. A user's events arrive on several topics, all
partitioned alike (a user's records sit on the same partition number of every topic), so the
records of one *partition group* — partition ``p`` of every input topic and of the re-key
topic — are merged here the way Kafka Streams merges a task's input partitions (KIP-353,
KIP-695): each topic-partition keeps its records in offset order, and the head with the
smallest event time ``ts`` goes first, ties broken by a fixed topic order. A topic-partition
with nothing buffered holds its group back while it may still bring an earlier record: until
it is *caught up* (the caller says so: in the worker, its next offset has reached its high
watermark) or until the group has waited ``max_idle_ms`` for it, after which the group goes
ahead out of order. Offline (the replay) every record is available, so nothing ever waits.

Pure: no Faust, no Kafka, no clock. The caller passes "now" (any monotonic milliseconds) and
whether a topic-partition is caught up.

>>> merge = EventTimeMerge(("transactions", "account-events"), max_idle_ms=100, max_buffered=10)
>>> merge.add("transactions", 0, 2_000, "buy")
>>> merge.add("account-events", 0, 1_000, "open")
>>> merge.drain()
['open', 'buy']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import orjson

T = TypeVar("T")

#: The ``ts`` of a record whose event time cannot be read. It goes first, without waiting for
#: anyone: no valid record can precede it, and the processor dead-letters it at once.
UNREADABLE_TS: Final = -1

#: ``caught_up(topic, partition)``: True when the topic-partition cannot bring a record that
#: is not already buffered (its next offset is at its end offset).
CaughtUp = Callable[[str, int], bool]


def event_ts(value: bytes | None, max_bytes: int, latest: int | None = None) -> int:
    """The ``ts`` field of a raw JSON event, or :data:`UNREADABLE_TS` (not JSON, no integer
    ``ts``, or longer than ``max_bytes``: the processor dead-letters it without reading it).

    >>> event_ts(b'{"ts": 1767225600000, "kind": "opened"}', 16_384)
    1767225600000
    >>> event_ts(b'{"ts": "soon"}', 16_384), event_ts(b"{", 16_384)
    (-1, -1)

    ``latest``: the newest ``ts`` the processor accepts for this record (its broker timestamp
    plus the allowed clock skew); a later one is refused as ``ts_in_future``, so it goes at
    once like an unreadable one, instead of holding back every later record of its
    topic-partition behind a ts no other record reaches.

    >>> event_ts(b'{"ts": 4070908800000}', 16_384, latest=1767312000000)
    -1
    """
    if value is None or len(value) > max_bytes:
        return UNREADABLE_TS
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return UNREADABLE_TS
    ts = data.get("ts") if isinstance(data, dict) else None
    # bool is an int in Python; the codec refuses it as a ts, so it is unreadable here too.
    if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 and (
            latest is None or ts <= latest):
        return ts
    return UNREADABLE_TS


@dataclass(frozen=True, slots=True)
class _Held(Generic[T]):
    ts: int
    item: T


@dataclass(frozen=True, slots=True)
class Release(Generic[T]):
    """The records released by one call, in application order, and how many went early."""

    items: list[T]
    #: released while a topic-partition of their group was still waited for, past the idle bound
    idle_timeout: int = 0
    #: released because the buffer was over its cap
    buffer_cap: int = 0


class EventTimeMerge(Generic[T]):
    """Buffers records per topic-partition and releases each partition group's in event time."""

    def __init__(self, topics: Sequence[str], max_idle_ms: int, max_buffered: int) -> None:
        """``topics``: every topic merged, in tie-break order (earlier wins a ts tie)."""
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self.topics = tuple(topics)
        self.rank = {t: i for i, t in enumerate(self.topics)}
        self.max_idle_ms = max_idle_ms
        self.max_buffered = max_buffered
        #: partition -> topic -> the topic-partition's records, in offset order
        self._groups: dict[int, dict[str, deque[_Held[T]]]] = {}
        #: partition -> when (caller's ms) the group started waiting for an empty partition
        self._waiting_since: dict[int, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, topic: str, partition: int, ts: int, item: T) -> None:
        """Buffer one record; a topic-partition's records must come in offset order (a tie
        inside one topic-partition goes by offset: its records leave in the order they came)."""
        group = self._groups.get(partition)
        if group is None:
            group = self._groups[partition] = {t: deque() for t in self.topics}
        group[topic].append(_Held(ts, item))
        self._size += 1

    def clear(self) -> list[T]:
        """Drop everything buffered (a rebalance: the records are delivered again from the
        committed offsets); returns what was dropped."""
        dropped = [held.item for group in self._groups.values()
                   for queue in group.values() for held in queue]
        self._groups.clear()
        self._waiting_since.clear()
        self._size = 0
        return dropped

    def deadline(self) -> int | None:
        """The earliest time (caller's ms) at which a waiting group goes ahead anyway."""
        if not self._waiting_since:
            return None
        return min(self._waiting_since.values()) + self.max_idle_ms

    def drain(self) -> list[T]:
        """Everything buffered, in event-time order, as when every partition is caught up
        (the replay: the whole log is available).

        The groups are merged with each other too, by (ts, topic order, partition): each
        group's records keep the order the group's own merge gives them (a merge of merges),
        and the offline model learns the labels of all groups in event time, as it would live.
        """
        heads: list[tuple[int, int, int, str]] = []
        for partition, group in self._groups.items():
            for topic, queue in group.items():
                if queue:
                    heads.append((queue[0].ts, self.rank[topic], partition, topic))
        heapq.heapify(heads)
        items: list[T] = []
        while heads:
            _, rank, partition, topic = heads[0]
            queue = self._groups[partition][topic]
            items.append(queue.popleft().item)
            if queue:
                heapq.heapreplace(heads, (queue[0].ts, rank, partition, topic))
            else:
                heapq.heappop(heads)
        self.clear()
        return items

    def release(self, now_ms: int, caught_up: CaughtUp) -> Release[T]:
        """The records that may be applied now, in application order."""
        items: list[T] = []
        idle = cap = 0
        while self._size > self.max_buffered:
            partition, topic = self._oldest_head()
            items.append(self._pop(partition, topic))
            cap += 1
        for partition in sorted(self._groups):
            idle += self._release_group(partition, now_ms, caught_up, items)
        return Release(items, idle, cap)

    def _release_group(self, partition: int, now_ms: int, caught_up: CaughtUp,
                       items: list[T]) -> int:
        group = self._groups[partition]
        early = 0
        blocked: list[str] | None = None  # empty topic-partitions that may bring more
        while True:
            best: tuple[int, int, str] | None = None
            for topic, queue in group.items():
                if queue:
                    head = (queue[0].ts, self.rank[topic], topic)
                    if best is None or head < best:
                        best = head
            if best is None:  # the group is empty: nothing to wait for either
                del self._groups[partition]
                self._waiting_since.pop(partition, None)
                return early
            ts, _, topic = best
            if blocked is None:
                blocked = [t for t, q in group.items() if not q and not caught_up(t, partition)]
            if blocked and ts != UNREADABLE_TS:
                since = self._waiting_since.setdefault(partition, now_ms)
                if now_ms - since < self.max_idle_ms:
                    return early
                early += 1
            elif not blocked:
                self._waiting_since.pop(partition, None)
            items.append(self._pop(partition, topic))
            if not group[topic]:
                blocked = None  # this topic-partition is empty now: ask about it again

    def _oldest_head(self) -> tuple[int, str]:
        best: tuple[int, int, int, str] | None = None
        for partition, group in self._groups.items():
            for topic, queue in group.items():
                if queue:
                    head = (queue[0].ts, self.rank[topic], partition, topic)
                    if best is None or head < best:
                        best = head
        assert best is not None, "called with records buffered"
        return best[2], best[3]

    def _pop(self, partition: int, topic: str) -> T:
        self._size -= 1
        return self._groups[partition][topic].popleft().item
