"""Offline replay: the worker's core over a recorded log, without a broker.

The same :class:`policies.processor.Processor` the worker uses, fed the log in order, gives
the same decisions with the same ids and bytes. Records of one user on different topics are
applied in log order here; a live worker applies them in arrival order, which Kafka fixes per
partition only — publish a user's cross-topic events in order (as core banking does) and the
two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from lab.learning import InProcessLearning
from policies.engine import Engine, Output, UserState
from policies.processor import BatchResult, Processor, RawRecord
from streams.codec import Limits
from streams.kafka_io import LogRecord

#: Records per processor call: bounds the per-batch bookkeeping, nothing else.
CHUNK = 1000


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
                 learning: InProcessLearning | None = None) -> None:
        self.processor = Processor(engine, limits)
        self.learning = learning
        self.states: dict[str, UserState] = {}
        self.offsets: dict[str, int] = {}
        self.stats = ReplayStats()

    def _raw(self, rec: LogRecord) -> RawRecord:
        offset = self.offsets.get(rec.topic, -1) + 1
        self.offsets[rec.topic] = offset
        # partition -1: no partitions offline (the processor re-keys nothing here).
        return RawRecord(rec.topic, -1, offset, rec.key, rec.value)

    def run(self, records: Iterable[LogRecord]) -> Iterator[Output]:
        chunk: list[RawRecord] = []
        for rec in records:
            chunk.append(self._raw(rec))
            if len(chunk) >= CHUNK:
                yield from self._apply(chunk)
                chunk = []
        if chunk:
            yield from self._apply(chunk)

    def _apply(self, chunk: list[RawRecord]) -> list[Output]:
        # States live here as objects the engine updates in place: keep each touched user's
        # state as it was before the chunk (encoded at first touch), for the processor to
        # rebuild from should a record fail half-way.
        before: dict[str, bytes | None] = {}

        def load(uid: str) -> UserState | None:
            state = self.states.get(uid)
            if uid not in before:
                before[uid] = None if state is None else state.encode()
            return state

        def reload(uid: str) -> UserState | None:
            raw = before.get(uid)
            return None if raw is None else UserState.decode(raw)

        result: BatchResult = self.processor.process(chunk, load, reload)
        self.states.update(result.states)
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
                learning: InProcessLearning | None = None) -> ReplayStats:
    from streams.kafka_io import read_log

    replay = Replay(engine, limits, learning)
    with output.open("wb") as out:
        write_outputs(replay.run(read_log(log)), out)
    return replay.stats
