"""The user agent: the thin Faust shell around :class:`policies.processor.Processor`.

One agent consumes every input topic (and the internal re-key topic) as raw bytes, so Faust
never drops a record it cannot decode, and so one user's events are applied by one coroutine
with no ``await`` between reading a state and writing it back.

**Event-time order.** Records are taken in batches (``take_events``) and held in an
:class:`~streams.event_order.EventTimeMerge`: per partition group (partition ``p`` of every
input topic and of the re-key topic) the record with the smallest ``ts`` goes first, and a
topic-partition with nothing buffered is waited for while it is not caught up (its next offset
below its high watermark), for at most ``LIMITSTREAM_MAX_IDLE_MS``. ``limitstream replay``
applies the same merge, so live and replay decide alike however the log was published.

Per set of records the merge releases:

1. the processor applies them to the users' states (pure; bad records become dead letters);
2. every output is sent and its delivery awaited;
3. only then is each touched user's state written to the table, once, with the offsets it
   has applied inside it, and the changelog records' delivery awaited;
4. only then are the records acked; Faust commits only the acked prefix of each partition.

``take_events`` acks a batch's records when the agent asks for the next batch; each record
taken gets one more reference first, so that ack is not the final one: a record held for
ordering stays unacked until it is applied and stored. On a rebalance Faust clears the
agents' buffers (its flow control) and this one with them: held records are dropped unacked
and delivered again, from the committed offsets, to whoever owns their partition. So after a
crash, a record is either in a stored state (its redelivery is a counted duplicate, its
outputs were delivered before the state was written) or not (it is applied again and re-sends
the same outputs, with the same ids).

**Nothing stalls.** A set of records that fails is retried with backoff: for as long as the
broker is unreachable (a retriable Kafka error: nothing to isolate), a bounded number of times
otherwise; then it is split in halves, recursively, to find the record(s) that fail alone,
which go to ``dead-letter`` as ``processing_failed`` while the stream moves on.
:meth:`UserAgent.stalled_s` tells ``/healthz`` how long records have waited without progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import faust
import orjson
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.types import TP

from agents.metrics import Metrics
from agents.users_table import users_table
from policies.engine import UserState
from policies.processor import (
    INPUT_TOPICS,
    REKEYED,
    SOURCE_HEADER,
    BatchResult,
    Processor,
    RawRecord,
    dead_letter,
)
from streams.app import aiokafka_kwargs
from streams.codec import BadInput, encode
from streams.event_order import EventTimeMerge, event_ts
from streams.kafka_io import logical_topics
from streams.offset_trace import offset_trace_of
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Records per batch, and the longest a record waits for its batch to fill (latency bound).
BATCH_MAX: Final = 1000
BATCH_WITHIN_S: Final = 0.01
#: Decoded user states kept between batches (about 5 KB each as objects): the active users.
STATE_CACHE_SIZE: Final = 50_000
#: Attempts of a failing set of records before it is split to find the record that fails;
#: the waits between them double from the first (0.5 + 1 + 2 s: a record that fails every
#: time holds its partition for seconds, not forever).
ATTEMPTS: Final = 4
FIRST_RETRY_S: Final = 0.5
#: The longest wait between two attempts while the broker is unreachable.
MAX_RETRY_S: Final = 30.0
#: How often a retry's wait looks whether the flow stopped (a rebalance or a stop waits for
#: the agent's unacked records).
ABANDON_POLL_S: Final = 0.1
#: While records are held for ordering, how often the agent looks again whether their
#: partition group may go on (a caught-up partition holds nobody back): the batch window.
ORDER_POLL_S: Final = BATCH_WITHIN_S

Event = faust.EventT[bytes]


def _header(headers: Any, name: str) -> str:
    """A header's value as text; bytes that are not UTF-8 are decoded with replacement
    characters (the processor then dead-letters the record as ``bad_rekey_source``): a
    header decode that raised stalled the stream on the record."""
    if not headers:
        return ""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k == name:
            if v is None:
                return ""
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return ""


class _Abandoned(Exception):
    """A rebalance or a stop began while records were retried: they are left unacked, for
    whoever owns their partition next (Faust waits for them before it hands the partitions
    over, and a retry that never ends kept a stopping worker alive)."""


def _broker_unreachable(exc: BaseException) -> bool:
    """A failure of the broker, not of the records: retried until it passes."""
    return isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError))


class _HeldRecords:
    """The records held for ordering, as one of the agent buffers Faust's flow control
    clears on a rebalance (``FlowControlEvent.clear``: at the revoke, before Faust waits for
    the streams' unacked records, and when the flow resumes). Dropped records were never
    acked: the seek to the committed offsets delivers them again."""

    def __init__(self, merge: EventTimeMerge[Event],
                 forget: Callable[[Iterable[Event]], None]) -> None:
        self.merge = merge
        self.forget = forget
        #: (real topic, partition) -> the next offset the agent has not received yet
        self.received: dict[tuple[str, int], int] = {}

    def clear(self) -> None:
        dropped = self.merge.clear()
        self.received.clear()
        if dropped:
            self.forget(dropped)
            log.info("rebalance: %d records held for ordering dropped unacked", len(dropped))


class UserAgent:
    """Owns the user table, the output topics and the processing of input batches."""

    def __init__(self, app: faust.App, settings: Settings, processor: Processor,
                 metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        n = settings.partitions
        #: Logical name (as the processor and the outputs name topics) -> real topic name;
        #: the topics are created by ensure_topics (labels has one partition, so a single
        #: trainer owns every label).
        self.topic_names = logical_topics(settings)
        #: Real input topic name -> logical name.
        self.logical = {self.topic_names[name]: name for name in (*INPUT_TOPICS, REKEYED)}
        self.inputs = app.topic(*settings.topics.inputs(), partitions=n, **raw)
        # Keys are raw user_id bytes and the changelog partition is the key's partition
        # (use_partitioner): the same partition as the user's input records, so recovery and
        # web routing find the user where its events are consumed.
        self.users = users_table(app, n, aiokafka_kwargs(settings))
        self.agent = app.agent(self.inputs, name="users")(self._run)
        self.offset_trace = offset_trace_of(app)
        #: user_id -> (status, stage, limit, pending labels) of the users stored here (gauges).
        self.summary: dict[str, tuple[str, int, int, int]] = {}
        #: Decoded states of recently stored users, valid while no rebalance happened.
        self.cache: dict[str, UserState] = {}
        #: The app's rebalance count that the cache and the summary reflect.
        self.generation = 0
        self.held = _HeldRecords(EventTimeMerge(
            (*INPUT_TOPICS, REKEYED), settings.max_idle_ms, settings.order_buffer_max),
            self.forget)
        # The flow control keeps its buffers in a WeakSet: self.held keeps this one alive.
        app.flow_control.manage_queue(self.held)  # type: ignore[arg-type]  # duck-typed: clear()
        #: Records being applied (released by the merge, not yet stored and acked).
        self.applying = 0
        #: time.monotonic() of the last progress: records stored, or nothing left to do.
        self.progress_at = time.monotonic()

    def sync_generation(self) -> None:
        """After a rebalance users may have moved between workers: drop the decoded states,
        rebuild the summary from the local table, and count the rebalances."""
        seen = self.app.rebalancing_count
        if seen == self.generation:
            return
        self.metrics.rebalances.inc(seen - self.generation)
        self.generation = seen
        self.cache.clear()
        self.summary = {}
        for key, raw in self.users.items():
            if raw is not None:
                state = orjson.loads(raw)
                a = state["a"]
                self.summary[key.decode()] = (a["status"], a["stage"], a["limit"],
                                              len(state["p"]))

    # -- the agent ---------------------------------------------------------------------------

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        # take_events is missing from faust's StreamT protocol, not from Stream.
        batches = stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S)  # type: ignore[attr-defined]
        nxt: asyncio.Future[list[Event]] | None = None
        try:
            while True:
                if nxt is None:
                    # Its own task: while records are held, the agent wakes up to release
                    # them without waiting for the next batch (which may never come).
                    nxt = asyncio.ensure_future(anext(batches))
                await asyncio.wait({nxt}, timeout=self._wake_in())
                if nxt.done():
                    try:
                        # Before take_events resumes and acks the batch (see the module doc).
                        # No reference to the batch stays here: on a rebalance Faust waits
                        # until the records nobody acked are garbage.
                        self.take(nxt.result())
                    except StopAsyncIteration:
                        return
                    # Taking goes on while the agent applies: the merge needs each partition's
                    # records, not only those that come first in the fetch order (a worker with
                    # a backlog got one partition's records seconds before the others').
                    nxt = asyncio.ensure_future(anext(batches))
                await self.apply_released()
        finally:
            if nxt is not None:
                nxt.cancel()

    def _wake_in(self) -> float | None:
        if not len(self.held.merge):
            return None
        return ORDER_POLL_S

    def take(self, events: list[Event]) -> None:
        """Hold a batch's records for ordering, each with one more reference (the ack)."""
        app = self.app
        generation = app.consumer_generation_id
        active = app.flow_control.is_active()
        merge, received = self.held.merge, self.held.received
        limits = self.processor.limits
        limit, skew = limits.max_message_bytes, limits.max_clock_skew_ms
        for ev in events:
            m = ev.message
            m.incref()
            if not active or m.generation_id != generation:
                # Taken as a rebalance began (Faust skips such records from now on): left
                # unacked, delivered again after the rebalance's seek.
                self.forget([ev])
                continue
            received[(m.topic, m.partition)] = m.offset + 1
            stamped = int(m.timestamp * 1000)
            latest = stamped + skew if stamped > 0 else None  # as the processor checks it
            merge.add(self.logical[m.topic], m.partition, event_ts(m.value, limit, latest), ev)
        if not self.applying and not len(merge):
            self.progress_at = time.monotonic()
        self.metrics.order_buffered.set(len(merge))

    def forget(self, events: Iterable[Event]) -> None:
        """Records given up unacked are no longer in flight: take them out of the set of
        unacked records the consumer waits for on a rebalance or a stop (it is weak, but
        Faust's stream iterator keeps a reference to the last event it delivered, so the
        wait for that record never ended). They are not acked: no commit passes them, and
        the seek to the committed offsets delivers them again."""
        unacked = self.app.consumer.unacked
        for ev in events:
            unacked.discard(ev.message)
        self.metrics.order_buffered.set(len(self.held.merge))

    def caught_up(self, topic: str, partition: int) -> bool:
        """True when the agent has received every record the partition had at its last
        fetch (its next offset reached the high watermark): it holds nobody back."""
        real = self.topic_names[topic]
        consumer = self.app.consumer
        try:
            highwater = consumer.highwater(TP(real, partition))
        except AssertionError:  # aiokafka: not assigned here, so nothing to wait for
            return True
        if highwater is None:
            return False  # not fetched yet
        received = self.held.received.get((real, partition))
        if received is None:
            # Nothing received since the seek: the partition starts at its committed offset
            # (Faust keeps it in the consumer; 0 or none: from the start).
            received = consumer._committed_offset.get(TP(real, partition)) or 0  # type: ignore[attr-defined]
        return received >= highwater

    async def apply_released(self) -> None:
        """Apply, store and ack what the merge releases now."""
        if not self.app.flow_control.is_active():
            return  # a rebalance: Faust is about to clear the held records
        merge = self.held.merge
        if not len(merge):
            return
        released = merge.release(int(time.monotonic() * 1000), self.caught_up)
        if released.idle_timeout:
            self.metrics.order_forced.labels(cause="idle_timeout").inc(released.idle_timeout)
        if released.buffer_cap:
            self.metrics.order_forced.labels(cause="buffer_cap").inc(released.buffer_cap)
        self.metrics.order_buffered.set(len(merge))
        items = released.items
        for start in range(0, len(items), BATCH_MAX):
            if not self.app.flow_control.is_active():
                self.forget(items[start:])  # a rebalance began: for the partitions' next owner
                return
            await self.apply(items[start:start + BATCH_MAX])

    async def apply(self, events: list[Event]) -> None:
        """Apply ``events`` in order, isolating any record that fails alone, then ack them."""
        self.applying = len(events)
        try:
            if not await self._attempt(events, ATTEMPTS):
                await self._isolate(events)
        except _Abandoned:
            log.warning("%d records left unacked: a rebalance or a stop began", len(events))
            self.forget(events)
            return
        finally:
            self.applying = 0
        consumer, sensors = self.app.consumer, self.app.sensors
        for ev in events:
            m = ev.message
            if m.ack(consumer):  # the final reference: Faust may commit it now
                sensors.on_message_out(m.tp, m.offset, m)
        self.progress_at = time.monotonic()

    async def _attempt(self, events: list[Event], attempts: int) -> bool:
        """Apply ``events`` (True), trying ``attempts`` times when they fail; a broker that
        cannot be reached is waited for, however long (/healthz reports the stall)."""
        delay, failures = FIRST_RETRY_S, 0
        while True:
            try:
                await self.handle(events)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                unreachable = _broker_unreachable(exc)
                self.metrics.agent_errors.labels(
                    stage="send" if unreachable else "process").inc()
                if not unreachable:
                    failures += 1
                    if failures >= attempts:
                        log.warning("%d records failed %d times: %r", len(events), failures, exc)
                        return False
                log.exception("%d records failed; retrying in %.1f s", len(events), delay)
                await self._pause(delay)
                delay = min(delay * 2, MAX_RETRY_S)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry, unless the flow stops (a rebalance, a stop): then give up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.app.flow_control.is_active():
                raise _Abandoned
            await asyncio.sleep(min(left, ABANDON_POLL_S))
        if not self.app.flow_control.is_active():
            raise _Abandoned

    async def _isolate(self, events: list[Event]) -> None:
        """Apply ``events`` in order, halving what fails until the records that fail alone
        are found; those go to dead-letter."""
        if len(events) == 1:
            await self._dead_letter(events[0])
            return
        mid = len(events) // 2
        for part in (events[:mid], events[mid:]):
            # A half fails at once or not at all: the whole set just failed ATTEMPTS times.
            if not await self._attempt(part, 1 if len(part) > 1 else ATTEMPTS):
                await self._isolate(part)

    async def _dead_letter(self, event: Event) -> None:
        record = self.to_raw([event])[0]
        log.error("record %s[%d]@%d fails every time: dead-lettered", record.topic,
                  record.partition, record.offset)
        out = dead_letter(record, BadInput(
            "processing_failed", f"processing failed {ATTEMPTS} times; see the worker's log"),
            self.processor.limits)
        result = BatchResult(outputs=[out])
        result.dead_letters[(record.source or record.topic, "processing_failed")] += 1
        while True:  # only the broker can refuse it (a dead letter is bounded)
            try:
                await self._send_and_store(result)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.agent_errors.labels(stage="send").inc()
                log.exception("dead letter not delivered; retrying in %.1f s", MAX_RETRY_S)
                await self._pause(MAX_RETRY_S)
        self._trace([event])
        self.observe(result, [record], 0.0)

    def stalled_s(self) -> float:
        """Seconds records have waited (held or being applied) without any progress."""
        if not self.applying and not len(self.held.merge):
            return 0.0
        return time.monotonic() - self.progress_at

    def load(self, user_id: str) -> UserState | None:
        """The user's state as stored in the table, freshly decoded."""
        raw = self.users.get(user_id.encode())
        return None if raw is None else UserState.decode(raw)

    def load_cached(self, user_id: str) -> UserState | None:
        """The user's state for processing: the decoded object kept from the last batch that
        stored it, else :meth:`load`. Decoding a full state per record was a third of the
        worker's time (bench/levers.py)."""
        state = self.cache.get(user_id)
        return state if state is not None else self.load(user_id)

    def _cache_stored(self, states: dict[str, UserState]) -> None:
        for uid, state in states.items():
            self.cache.pop(uid, None)  # re-insert: the dict's order is the eviction order
            self.cache[uid] = state
        while len(self.cache) > STATE_CACHE_SIZE:
            del self.cache[next(iter(self.cache))]

    def to_raw(self, events: list[Event]) -> list[RawRecord]:
        records = []
        for ev in events:
            m = ev.message
            logical = self.logical[m.topic]
            records.append(RawRecord(
                topic=logical, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                timestamp_ms=int(m.timestamp * 1000),
                source=_header(m.headers, SOURCE_HEADER) if logical == REKEYED else "",
            ))
        return records

    async def handle(self, events: list[Event]) -> BatchResult:
        records = self.to_raw(events)
        self.sync_generation()
        t0 = time.perf_counter()
        # The engine updates the loaded (cached) objects in place; a failed record is
        # rebuilt from the table, which this batch has not written yet.
        try:
            result = self.processor.process(records, self.load_cached, self.load)
        except BaseException:
            self.cache.clear()  # some cached objects may be half-updated
            raise
        elapsed = time.perf_counter() - t0
        try:
            await self._send_and_store(result)
        except BaseException:
            # Not stored: the cached objects this batch changed are ahead of the table.
            for uid in result.states:
                self.cache.pop(uid, None)
            raise
        self._trace(events)
        self.observe(result, records, elapsed)
        return result

    def _trace(self, events: list[Event]) -> None:
        if self.offset_trace is not None:  # applied and stored: what the trace calls processed
            self.offset_trace.batch(self.app.consumer_generation_id, (
                (ev.message.topic, ev.message.partition, ev.message.offset) for ev in events))

    async def _send_and_store(self, result: BatchResult) -> None:
        # Straight to the producer: Faust's Topic.send path (FutureMessage, its buffer,
        # sensors) cost about as much as processing the event (bench/levers.py) — so Faust's
        # send sensors see none of these records, and the delivery is measured here.
        send = self.app.producer.send
        t0 = time.perf_counter()
        try:
            futures = []
            for out in result.outputs:
                topic = self.topic_names[out.topic]
                if out.topic == REKEYED:
                    futures.append(await send(topic, out.key.encode(), out.value["raw"], None,
                                              None,
                                              [(SOURCE_HEADER, out.value["source"].encode())]))
                else:
                    futures.append(await send(topic, out.key.encode() or None,
                                              encode(out.value), None, None, None))
            if futures:
                await asyncio.gather(*futures)
        except Exception:
            self.metrics.send_errors.labels(what="outputs").inc()
            raise
        if result.outputs:
            self.metrics.observe_delivery("outputs", time.perf_counter() - t0,
                                          Counter(o.topic for o in result.outputs))
        t0 = time.perf_counter()
        try:
            stored = []
            for uid, state in result.states.items():
                stored.append(await self.users.put(uid.encode(), state.encode()))
                a = state.account
                self.summary[uid] = (a.status.value, a.stage, a.limit, len(state.pending))
            # Delivered before Faust may ack (and later commit) the batch's input offsets.
            self.users.delivered(await asyncio.gather(*stored))
        except Exception:
            self.metrics.send_errors.labels(what="states").inc()
            raise
        if result.states:
            self.metrics.observe_delivery("states", time.perf_counter() - t0)
        self._cache_stored(result.states)

    def observe(self, result: BatchResult, records: list[RawRecord], elapsed: float) -> None:
        m = self.metrics
        now = time.time()
        per_event = elapsed / max(1, len(records))
        # Counted per batch: a labels() lookup per event was a visible share of the worker.
        by_kind: Counter[tuple[str, str]] = Counter()
        for a in result.applied:
            by_kind[(a.record.source or a.record.topic, a.event.kind)] += 1
            r = a.result
            if r.out_of_order:
                m.out_of_order_events.inc()
            if r.late_events:
                m.late_events.inc(r.late_events)
            if r.expired_labels:
                m.labels_expired.inc(r.expired_labels)
            for label in r.labels:
                m.labels_emitted.labels(label=str(label)).inc()
            for d in r.decisions:
                m.decisions.labels(action=d.action.value).inc()
                if r.fallback_reason:
                    m.fallback_decisions.labels(reason=r.fallback_reason).inc()
            if r.outputs and a.record.timestamp_ms:
                m.decision_latency.observe(max(0.0, now - a.record.timestamp_ms / 1000))
        by_topic: Counter[str] = Counter()
        for (topic, kind), n in by_kind.items():
            m.events.labels(topic=topic, kind=kind).inc(n)
            by_topic[topic] += n
        for topic, n in by_topic.items():
            child = m.processing.labels(topic=topic)
            for _ in range(n):
                child.observe(per_event)
        for (topic, code), n in result.dead_letters.items():
            m.dead_letters.labels(topic=topic, reason=code).inc(n)
        for (topic, cause), n in result.duplicates.items():
            m.duplicates.labels(topic=topic, cause=cause).inc(n)
        for topic, n in result.rekeyed.items():
            m.rekeyed.labels(topic=topic).inc(n)
        if result.errors:
            m.agent_errors.labels(stage="process").inc(result.errors)
