"""The Faust app factory and the Kafka client settings shared by every client we build.

A factory, not a module-level app: the CLI, the tests and the benchmarks each build their own
app from a :class:`~streams.settings.Settings`, several in one process if they like.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from streams.offset_trace import OffsetTrace
from streams.settings import Settings

#: Producer tuning. The agent hands a whole batch's records to the producer before it yields
#: (agents/user_agent.py), so they share requests without any linger, and a linger would only
#: delay the delivery the batch waits for (bench.latency: p50 at 10 % load 30 -> 18 ms without
#: the former 5 ms). Large batches: one request per broker for a batch of 1 000 users.
PRODUCER_LINGER_S = 0.0
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
MAX_POLL_RECORDS = 2000
SESSION_TIMEOUT_S = 4.0
#: How long the coordinator waits for members to rejoin a rebalance. A member that takes
#: longer (a worker finishing its batch in ``on_partitions_revoked`` on a loaded machine) is
#: dropped from the generation while it still writes: a zombie whose late changelog records
#: could follow the new owner's. Dead members leave at the session timeout anyway.
REBALANCE_TIMEOUT_S = 30.0
FETCH_MAX_WAIT_MS = 20
HEARTBEAT_S = 1.0


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as the Java client and aiokafka do it).

    Cached for the active users: aiokafka's murmur2 is pure Python and the worker asks it
    several times per event (the re-key check, the changelog, the store).
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    sec = settings.security
    if sec.protocol not in ("SSL", "SASL_SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=sec.ssl_cafile or None, certfile=sec.ssl_certfile or None,
        keyfile=sec.ssl_keyfile or None)
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the configured security protocol (None: plaintext)."""
    sec = settings.security
    context = ssl_context(settings)
    if sec.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=sec.sasl_username, password=sec.sasl_password.value,
            mechanism=sec.sasl_mechanism, ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for plain aiokafka clients (CLI, snapshot follower)."""
    sec = settings.security
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.broker.replace("kafka://", "").split(";"),
        "security_protocol": sec.protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kw["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kw.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                  sasl_plain_password=sec.sasl_password.value)
    return kw


def _short_fetch_wait() -> None:
    """Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Measured on the
    embedded broker, an idle worker then saw a fresh record 90-750 ms late (median about
    740 ms); the decision-latency goal is 50 ms. The setting only bounds how long the broker
    may hold an *empty* fetch, so a shorter one costs nothing under load."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "limitstream_patched", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    create_worker_consumer.limitstream_patched = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def _rewind_uncommitted_partitions() -> None:
    """After every rebalance Faust seeks each assigned partition to its committed offset;
    aiokafka's ``seek_to_committed`` leaves a partition with no committed offset (or 0) where
    it is. While the tables recover, though, Faust's consumer fetches the stream partitions
    too and drops what it fetched ("inactive partition"), so such a partition's position has
    already moved on: the worker then starts after records it never processed, and commits
    past them. Seen on the embedded broker in tests/e2e/test_multiworker.py::
    test_repeated_sigkills (a worker started partition 0 of transactions at offset 1 563, no
    offset of it ever committed, 165-1 562 never processed); tests/e2e/test_crash.py, whose
    restarted worker has no transaction offset committed either, lost two consecutive records
    once in CI, which fits the same cause. So an input partition without a committed offset
    is sought to its beginning, which is what ``consumer_auto_offset_reset="earliest"``
    means.
    """
    from faust.transport.consumer import Consumer
    from faust.types import TP

    if getattr(Consumer.perform_seek, "limitstream_patched", False):
        return

    async def perform_seek(self: Any) -> None:
        # Faust's perform_seek, plus the rewind of input partitions without a commit.
        committed = await self.seek_to_committed()
        trace = offset_trace_of(self.app)
        if trace is not None:
            trace.seek(self.app.consumer_generation_id,
                       {(tp.topic, tp.partition): o for tp, o in committed.items()})
        fresh = [tp for tp, offset in committed.items()
                 if not offset and self.app.topics.acks_enabled_for(tp.topic)]
        if fresh:
            # Offset 0: on a log whose head was deleted, the fetch is out of range and the
            # consumer resets to the earliest offset it has.
            await self.seek_wait({tp: 0 for tp in fresh})
        self._read_offset.update({
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()})
        self._committed_offset.update({
            TP(tp.topic, tp.partition): offset if offset else None
            for tp, offset in committed.items() if offset is not None})

    perform_seek.limitstream_patched = True  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def _no_ack_for_skipped_messages() -> None:
    """Around a rebalance Faust's stream *skips* a record that reaches it while flow control
    is suspended or that was fetched in an earlier consumer generation. Faust's compiled
    stream iterator (the one a worker normally runs) leaves such a record unacked, so the
    seek to the committed offsets that ends the rebalance delivers it again. The pure-Python
    iterator — used when the compiled extension is missing (no wheel for the platform) or
    ``NO_CYTHON`` is set — acks it "so that the lag does not grow", and the rebalance's own
    commit can then commit a record no agent processed. Measured with both iterators in
    tests/unit/test_rebalance_corrections.py. Here the Python path behaves like the compiled
    one: an ack of a skipped record is refused. A skipped record is recognised by the stream's
    own test, and is never *tracked* (tracking follows that test), so the acks of records the
    agent did take — tracked, in any generation — are untouched.
    """
    from faust.transport.consumer import Consumer

    ack = Consumer.ack
    if getattr(ack, "limitstream_patched", False):
        return

    def ack_unless_skipped(self: Any, message: Any) -> bool:
        app = self.app
        if not message.tracked and (
                not app.flow_control.is_active()
                or message.generation_id != app.consumer_generation_id):
            return False
        return bool(ack(self, message))

    ack_unless_skipped.limitstream_patched = True  # type: ignore[attr-defined]
    Consumer.ack = ack_unless_skipped  # type: ignore[method-assign]


def offset_trace_of(app: Any) -> OffsetTrace | None:
    """The app's offset trace (``LIMITSTREAM_OFFSET_TRACE``), if it keeps one."""
    trace: OffsetTrace | None = getattr(app, "limitstream_offset_trace", None)
    return trace


def _trace_commits() -> None:
    """Commits go to the offset trace too (when the app keeps one)."""
    from faust.transport.drivers.aiokafka import Consumer

    commit = Consumer._commit
    if getattr(commit, "limitstream_patched", False):
        return

    async def traced_commit(self: Any, offsets: Any) -> bool:
        ok = bool(await commit(self, offsets))
        trace = offset_trace_of(self.app)
        if ok and trace is not None:
            trace.commit(self.app.consumer_generation_id,
                         {(tp.topic, tp.partition): o for tp, o in offsets.items()})
        return ok

    traced_commit.limitstream_patched = True  # type: ignore[attr-defined]
    Consumer._commit = traced_commit  # type: ignore[method-assign]


def _trace_gaps() -> None:
    """Gaps go to the offset trace too: Faust's consumer counts the offsets it saw skipped
    as acked (for transaction markers), the one way an offset no stream acked gets committed."""
    from faust.transport.consumer import Consumer

    add_gap = Consumer._add_gap
    if getattr(add_gap, "limitstream_patched", False):
        return

    async def traced_add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        trace = offset_trace_of(self.app)
        if trace is not None:
            trace.gap(self.app.consumer_generation_id, tp.topic, tp.partition, offset_from,
                      offset_to)
        await add_gap(self, tp, offset_from, offset_to)

    traced_add_gap.limitstream_patched = True  # type: ignore[attr-defined]
    Consumer._add_gap = traced_add_gap  # type: ignore[method-assign]


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from the settings; agents are registered by :mod:`agents`."""
    if not settings.broker:
        raise ValueError("create_app needs a broker URL (start the embedded broker first)")
    _short_fetch_wait()
    _rewind_uncommitted_partitions()
    _no_ack_for_skipped_messages()
    _trace_commits()
    _trace_gaps()
    conf: dict[str, Any] = {
        "broker": settings.broker,
        "store": settings.store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "table_standby_replicas": settings.standby_replicas,
        "processing_guarantee": "at_least_once",
        "web_enabled": True,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "canonical_url": settings.advertised_url,
        "producer_linger": PRODUCER_LINGER_S,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "broker_max_poll_records": MAX_POLL_RECORDS,
        "consumer_auto_offset_reset": "earliest",
        # Faust compares a RocksDB store's persisted offset with the changelog's reported end
        # offset, which the embedded broker under-reports: every restart failed there. The
        # user table runs the same check against its recovery fence instead
        # (agents/users_table.check_persisted_offsets).
        "recovery_consistency_check": False,
        # Short session: a dead worker's partitions move on within seconds, and a group join
        # on the embedded broker does not wait out a long session (measured: 30 s -> 7 s).
        # 4 s, because a worker stopped by SIGTERM does not get to send its LeaveGroup (mode
        # cancels the consumer thread's stop after 1 s): the others notice at the session
        # timeout. Measured hand-over after SIGTERM: 11.5 s with 6 s, 8.8 s with 4 s.
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_S,
        "broker_rebalance_timeout": REBALANCE_TIMEOUT_S,
        # The user table is keyed by user_id; a small key index keeps memory flat.
        "table_cleanup_interval": 30.0,
    }
    if settings.instance_id:
        # Static membership: a restarted worker with the same identity takes its partitions
        # back without a full rebalance (about 20 s -> 11 s on the embedded broker).
        conf["consumer_group_instance_id"] = settings.instance_id
    credentials = faust_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    app = faust.App(settings.app_id, **conf)
    if settings.offset_trace:
        app.limitstream_offset_trace = OffsetTrace(settings.offset_trace)  # type: ignore[attr-defined]
    return app
