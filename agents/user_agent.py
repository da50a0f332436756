"""The user agent: the thin Faust shell around :class:`policies.processor.Processor`.

One agent consumes every input topic (and the internal re-key topic) as raw bytes, so Faust
never drops a record it cannot decode, and so one user's events are applied by one coroutine
with no ``await`` between reading a state and writing it back.

Per batch of records (``take_events``):

1. the processor applies them to the users' states (pure; bad records become dead letters);
2. every output is sent and its delivery awaited;
3. only then is each touched user's state written to the table, once, with the offsets it
   has applied inside it, and the changelog records' delivery awaited.

Faust acks the batch's records only after this body returns, and commits only acked offsets.
So after a crash, a record is either in a stored state (its redelivery is a counted
duplicate, its outputs were delivered before the state was written) or not (it is applied
again and re-sends the same outputs, with the same ids).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import faust
import orjson

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
)
from streams.app import aiokafka_kwargs
from streams.codec import encode
from streams.kafka_io import logical_topics
from streams.offset_trace import offset_trace_of
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Records per batch, and the longest a record waits for its batch to fill (latency bound).
BATCH_MAX: Final = 1000
BATCH_WITHIN_S: Final = 0.01
#: Decoded user states kept between batches (about 5 KB each as objects): the active users.
STATE_CACHE_SIZE: Final = 50_000


def _header(headers: Any, name: str) -> str:
    if not headers:
        return ""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return ""


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
        #: (topic, partition) -> last offset handled, for the consumer-lag gauge.
        self.handled: dict[tuple[str, int], int] = {}
        self.offset_trace = offset_trace_of(app)
        #: user_id -> (status, stage, limit, pending labels) of the users stored here (gauges).
        self.summary: dict[str, tuple[str, int, int, int]] = {}
        #: Decoded states of recently stored users, valid while no rebalance happened.
        self.cache: dict[str, UserState] = {}
        #: The app's rebalance count that the cache and the summary reflect.
        self.generation = 0

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
        async for events in batches:
            # Until handle() returns, nothing of the batch is stored or acked, and the outputs
            # are deterministic: a failed attempt (broker unreachable) is simply tried again.
            delay = 0.5
            while True:
                try:
                    await self.handle(events)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.metrics.agent_errors.labels(stage="send").inc()
                    log.exception("batch of %d records failed; retrying in %.1f s",
                                  len(events), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

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

    def to_raw(self, events: list[faust.EventT[bytes]]) -> list[RawRecord]:
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

    async def handle(self, events: list[faust.EventT[bytes]]) -> BatchResult:
        records = self.to_raw(events)
        for ev in events:
            self.handled[(ev.message.topic, ev.message.partition)] = ev.message.offset
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
        if self.offset_trace is not None:  # applied and stored: what the trace calls processed
            self.offset_trace.batch(self.app.consumer_generation_id, (
                (ev.message.topic, ev.message.partition, ev.message.offset) for ev in events))
        self.observe(result, records, elapsed)
        return result

    async def _send_and_store(self, result: BatchResult) -> None:
        # Straight to the producer: Faust's Topic.send path (FutureMessage, its buffer,
        # sensors) cost about as much as processing the event (bench/levers.py).
        send = self.app.producer.send
        futures = []
        for out in result.outputs:
            topic = self.topic_names[out.topic]
            if out.topic == REKEYED:
                futures.append(await send(topic, out.key.encode(), out.value["raw"], None, None,
                                          [(SOURCE_HEADER, out.value["source"].encode())]))
            else:
                futures.append(await send(topic, out.key.encode() or None, encode(out.value),
                                          None, None, None))
        if futures:
            await asyncio.gather(*futures)
        stored = []
        for uid, state in result.states.items():
            stored.append(await self.users.put(uid.encode(), state.encode()))
            a = state.account
            self.summary[uid] = (a.status.value, a.stage, a.limit, len(state.pending))
        # Delivered before Faust may ack (and later commit) the batch's input offsets.
        self.users.delivered(await asyncio.gather(*stored))
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
