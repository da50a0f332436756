"""Offline replay: the worker's core over a recorded log, without a broker.

The same :class:`policies.processor.Processor` the worker uses, fed the same order, gives the
same decisions with the same ids and bytes. The order is the worker's
(:mod:`streams.event_order`): a record belongs to the partition its key maps to
(``settings.partitions``, Kafka's partitioner), each topic-partition keeps the log's order,
and the topic-partitions of a partition group are merged by event time, ties by topic order.
The whole input of a :meth:`Replay.run` call is available, so nothing waits: a live worker
that never went ahead past its idle bound (``LIMITSTREAM_MAX_IDLE_MS``) applied the same
order, however the log was published. (A record keyed by something else than its user is
applied in its key's group here; live, it takes the re-key topic to its user's group.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import orjson

from lab.learning import InProcessLearning
from policies.engine import Engine, Output, Source, UserState
from policies.processor import INPUT_TOPICS, BatchResult, Processor, RawRecord
from streams.app import key_partition
from streams.codec import Limits
from streams.event_order import EventTimeMerge, event_ts
from streams.kafka_io import LogRecord
from streams.records import InputEvent
from streams.settings import Settings

#: Records per processor call: bounds the per-batch bookkeeping, nothing else.
CHUNK = 1000
#: Records an epoch spans at most (see :meth:`Replay._apply`): bounds the records kept to
#: rebuild a state after a failure, and the steps the rebuild re-applies.
EPOCH_RECORDS: Final = 20_000
#: The partitions a replay assumes unless told the deployment's.
DEFAULT_PARTITIONS: Final = Settings().partitions


@dataclass(slots=True)
class ReplayStats:
    records: int = 0
    applied: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    decisions: int = 0
    outputs: int = 0
    labels: int = 0
    by_action: dict[str, int] = field(default_factory=dict)


class Replay:
    """Feeds recorded records through the processor, keeping user states in memory."""

    def __init__(self, engine: Engine, limits: Limits,
                 learning: InProcessLearning | None = None,
                 partitions: int = DEFAULT_PARTITIONS) -> None:
        """``partitions``: the deployment's (``settings.partitions``); a record's partition
        group decides which records it is merged with, hence the order."""
        self.processor = Processor(engine, limits)
        self.learning = learning
        self.partitions = partitions
        self.states: dict[str, UserState] = {}
        #: (topic, partition) -> offsets given so far (a record's offset is its position in
        #: its topic-partition, as on the broker)
        self.offsets: dict[tuple[str, int], int] = {}
        self.stats = ReplayStats()
        # The current epoch (see _apply): each touched user's state as encoded at its first
        # touch (None: a new user), the records applied to it since, the records it spans and
        # the model installs seen when it began.
        self._base: dict[str, bytes | None] = {}
        self._since: dict[str, list[tuple[InputEvent, Source]]] = {}
        self._epoch_records = 0
        self._epoch_installs = -1

    def _start_epoch_if_due(self) -> None:
        """A new epoch after a model install, or once the current one spans
        :data:`EPOCH_RECORDS` (what a failure re-applies, and the records kept for it)."""
        installs = self.learning.snapshots if self.learning is not None else 0
        if installs != self._epoch_installs or self._epoch_records >= EPOCH_RECORDS:
            self._base.clear()
            self._since.clear()
            self._epoch_records = 0
            self._epoch_installs = installs

    def _raw(self, rec: LogRecord) -> RawRecord:
        # A record without a key goes to partition 0 here (the processor dead-letters it or
        # applies it by its user_id); Kafka would spread keyless records round robin.
        partition = key_partition(rec.key, self.partitions) if rec.key else 0
        offset = self.offsets.get((rec.topic, partition), 0)
        self.offsets[(rec.topic, partition)] = offset + 1
        # The log's record timestamp if it kept one (0: none): the clock event times are
        # checked against, as the worker checks them against the broker's.
        return RawRecord(rec.topic, partition, offset, rec.key, rec.value, rec.timestamp_ms)

    def ordered(self, records: Iterable[LogRecord]) -> list[RawRecord]:
        """``records`` as the worker applies them: merged by event time per partition group."""
        # Offline nothing is waited for and nothing is let go early: drain() takes it all.
        merge: EventTimeMerge[RawRecord] = EventTimeMerge(
            INPUT_TOPICS, max_idle_ms=0, max_buffered=sys.maxsize)
        limits = self.processor.limits
        for rec in records:
            raw = self._raw(rec)
            latest = (raw.timestamp_ms + limits.max_clock_skew_ms if raw.timestamp_ms > 0
                      else None)  # as the processor checks it
            merge.add(raw.topic, raw.partition,
                      event_ts(raw.value, limits.max_message_bytes, latest), raw)
        return merge.drain()

    def run(self, records: Iterable[LogRecord]) -> Iterator[Output]:
        """Apply ``records`` (all of them read first: a later line may go first) and yield
        the outputs."""
        ordered = self.ordered(records)
        for start in range(0, len(ordered), CHUNK):
            yield from self._apply(ordered[start:start + CHUNK])

    def _apply(self, chunk: list[RawRecord]) -> list[Output]:
        # States live here as objects the engine updates in place, so a record that fails
        # half-way needs the user's state as it was before it: the processor rebuilds it from
        # ``reload`` (the state before this chunk) and the chunk's earlier records. Encoding
        # every touched state before every chunk cost a quarter of a replay and a third of a
        # backtest pass (whose chunks are a few dozen records). So a state is encoded once per
        # epoch (at its first touch) and ``reload`` re-applies the user's records since: exact,
        # because between two installs of a model the engine is a function of the state and
        # the event alone, and an epoch ends whenever ``learning`` installs one.
        self._start_epoch_if_due()
        base, since = self._base, self._since

        def load(uid: str) -> UserState | None:
            state = self.states.get(uid)
            if uid not in base:
                base[uid] = None if state is None else state.encode()
                since[uid] = []
            return state

        def reload(uid: str) -> UserState | None:
            raw = base.get(uid)
            state = None if raw is None else UserState.decode(raw)
            for event, source in since.get(uid, ()):
                state = self.processor.engine.step(state, event, source).state
            return state

        result: BatchResult = self.processor.process(chunk, load, reload)
        self.states.update(result.states)
        for uid, steps in result.steps.items():
            since[uid].extend(steps)
        self._epoch_records += len(chunk)
        s = self.stats
        s.records += len(chunk)
        s.applied += len(result.applied)
        s.dead_letters += sum(result.dead_letters.values())
        s.duplicates += sum(result.duplicates.values())
        for d in result.decisions:
            s.decisions += 1
            s.by_action[d.action.value] = s.by_action.get(d.action.value, 0) + 1
        s.labels += sum(len(a.result.labels) for a in result.applied)
        s.outputs += len(result.outputs)
        if self.learning is not None:
            self.learning.observe(result.outputs)
        return result.outputs


def write_outputs(outputs: Iterable[Output], out: IO[bytes]) -> int:
    n = 0
    for o in outputs:
        out.write(orjson.dumps({"topic": o.topic, "key": o.key, "value": o.value},
                               option=orjson.OPT_SORT_KEYS))
        out.write(b"\n")
        n += 1
    return n


def replay_file(engine: Engine, limits: Limits, log: Path, output: Path,
                learning: InProcessLearning | None = None,
                partitions: int = DEFAULT_PARTITIONS) -> ReplayStats:
    from streams.kafka_io import read_log

    replay = Replay(engine, limits, learning, partitions)
    with output.open("wb") as out:
        write_outputs(replay.run(read_log(log)), out)
    return replay.stats
