"""limitstream's corrections to Faust's internals, in one place.

Each correction replaces one function of faust-streaming **0.15.3** (the version pinned in
``pyproject.toml``) with a wrapper that keeps Faust's behaviour and adds ours; each says why.
They patch private functions, so a Faust upgrade can silently change what they wrap:
:data:`PATCHED` names every patched function with the signature it was written against, and
``tests/unit/test_faust_fixes.py`` fails loudly when the installed Faust differs. Installed
once per process by :func:`install` (idempotent), before the worker's app is built.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from streams.offset_trace import offset_trace_of

log = logging.getLogger(__name__)

#: The Faust release these corrections were written against and tested with.
FAUST_VERSION: Final = "0.15.3"
#: Every patched function, ``"module:Class.method"``, with the signature (``inspect``'s text)
#: Faust had when the correction was written.
PATCHED: Final = {
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer":
        "(self, transport: 'Transport') -> aiokafka.consumer.consumer.AIOKafkaConsumer",
    "faust.transport.consumer:Consumer.perform_seek": "(self) -> None",
    "faust.transport.consumer:Consumer.ack": "(self, message: faust.types.tuples.Message) -> bool",
    "faust.transport.drivers.aiokafka:Consumer._commit":
        "(self, offsets: Mapping[faust.types.tuples.TP, int]) -> bool",
    "faust.transport.consumer:Consumer._add_gap":
        "(self, tp: faust.types.tuples.TP, offset_from: int, offset_to: int) -> None",
    "faust.tables.recovery:Recovery.on_recovery_completed":
        "(self, generation_id: int = 0) -> None",
}
#: The worker consumer's fetch wait (see :func:`short_fetch_wait`).
FETCH_MAX_WAIT_MS = 20


def install() -> None:
    """Install every correction (idempotent: a second call changes nothing)."""
    short_fetch_wait()
    rewind_uncommitted_partitions()
    no_ack_for_skipped_messages()
    trace_commits()
    trace_gaps()
    no_completion_of_an_overtaken_recovery()


def short_fetch_wait() -> None:
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
    create_worker_consumer.__wrapped__ = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def rewind_uncommitted_partitions() -> None:
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

    original = Consumer.perform_seek
    if getattr(original, "limitstream_patched", False):
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
    perform_seek.__wrapped__ = original  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def no_ack_for_skipped_messages() -> None:
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
    ack_unless_skipped.__wrapped__ = ack  # type: ignore[attr-defined]
    Consumer.ack = ack_unless_skipped  # type: ignore[method-assign]


def trace_commits() -> None:
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
    traced_commit.__wrapped__ = commit  # type: ignore[attr-defined]
    Consumer._commit = traced_commit  # type: ignore[method-assign]


def trace_gaps() -> None:
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
    traced_add_gap.__wrapped__ = add_gap  # type: ignore[attr-defined]
    Consumer._add_gap = traced_add_gap  # type: ignore[method-assign]


def no_completion_of_an_overtaken_recovery() -> None:
    """Faust's table recovery waits for the end of its changelog reads inside ``try: ...
    except Exception`` (``Recovery._restart_recovery``), which also swallows the
    ``RebalanceAgain`` a newer assignment raises there: a recovery that a newer rebalance
    overtook mid-read goes on to "Done reading" and to ``on_recovery_completed`` with its own,
    older generation id. That method starts every table's completion callback, with the
    tables' partitions as the *newer* assignment has just set them, before it compares
    generations; Faust then cancels it (``RebalanceAgain`` again) but not the callbacks. The
    user table's callback so ran beside the newer generation's own recovery, unaware: it read
    a changelog tail from the old recovery's end offsets and marked the partitions as served,
    and the newer recovery's records of them were then dropped as stale — every user state
    between where the old read had stopped and the old end offset was lost, and the inputs
    behind them were committed (the chaos soak: the states a worker recovered for the two
    partitions it took over predated committed inputs; tests/e2e/test_overtaken_recovery.py).
    Here a completion whose generation is no longer the consumer's changes nothing: the newer
    generation's recovery completes the tables.
    """
    from faust.tables.recovery import Recovery

    completed = Recovery.on_recovery_completed
    if getattr(completed, "limitstream_patched", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        current = self.app.consumer_generation_id
        if generation_id != current:
            log.warning("the table recovery of generation %d ended after generation %d had "
                        "begun: it completes nothing (the newer recovery does)",
                        generation_id, current)
            return
        await completed(self, generation_id)

    on_recovery_completed.limitstream_patched = True  # type: ignore[attr-defined]
    on_recovery_completed.__wrapped__ = completed  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
