"""From raw Kafka records to new user states and output messages — no I/O.

The worker (``agents/user_agent.py``) and ``limitstream replay`` both hand batches of raw
records to :class:`Processor` and get back the touched user states, the messages to send and
the counts for the metrics. Everything that can go wrong with a record ends as a dead letter:

* the bytes are not a valid event of their topic (:class:`streams.codec.BadInput`);
* an operator command the policy refuses (:class:`policies.decide.CommandRejected`);
* processing raised: the user's state is rebuilt without that record, so a poison message
  never leaves a half-applied state behind.

A valid record whose Kafka key is not its ``user_id`` (or that sits on another partition than
its key's) is sent to the internal re-key topic instead of being applied where it landed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from policies.decide import CommandRejected, Decision
from policies.engine import Engine, Output, Source, StepResult, UserState
from streams.codec import BadInput, Limits, decode, derive_id, raw_b64
from streams.records import InputEvent

DEAD_LETTER: Final = "dead-letter"
REKEYED: Final = "rekeyed"
#: Header naming the logical topic a re-keyed record came from.
SOURCE_HEADER: Final = "limitstream-source"
INPUT_TOPICS: Final = ("transactions", "repayments", "account-events", "limit-commands")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed record, as the broker gave it."""

    topic: str  #: logical topic: one of INPUT_TOPICS or REKEYED
    partition: int  #: -1 in the replay (no partitions to check)
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0  #: the broker's record timestamp (latency only)
    source: str = ""  #: for REKEYED records: the SOURCE_HEADER value


@dataclass(slots=True)
class Applied:
    """A record applied to its user's state, with its step result."""

    record: RawRecord
    event: InputEvent
    result: StepResult


@dataclass(slots=True)
class BatchResult:
    """What a batch did: states to store, messages to send, counts for the metrics."""

    states: dict[str, UserState] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic, code)
    duplicates: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic, cause)
    rekeyed: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def decisions(self) -> list[Decision]:
        return [d for a in self.applied for d in a.result.decisions]


def dead_letter(record: RawRecord, error: BadInput) -> Output:
    """The dead-letter message for a record: everything needed to inspect and re-drive it."""
    key_text = record.key.decode("utf-8", "replace") if record.key is not None else None
    return Output(DEAD_LETTER, key_text or "", {
        "event_id": derive_id("dead-letter", record.topic, record.source, record.partition,
                              record.offset),
        "source_topic": record.source or record.topic,
        "via": REKEYED if record.topic == REKEYED else "",
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": key_text,
        "raw_b64": raw_b64(record.value),
        "raw_size": len(record.value or b""),
        "error": error.as_dict(),
    })


class Processor:
    """Applies batches of raw records through an :class:`Engine`."""

    def __init__(self, engine: Engine, limits: Limits,
                 partition_of: Callable[[bytes], int] | None = None) -> None:
        """``partition_of`` gives a key's partition (the shell's Kafka partitioner); without
        it — the replay has no partitions — nothing is re-keyed."""
        self.engine = engine
        self.limits = limits
        self.partition_of = partition_of

    def _logical(self, record: RawRecord) -> str:
        if record.topic != REKEYED:
            return record.topic
        if record.source not in INPUT_TOPICS:
            raise BadInput("bad_rekey_source",
                           f"re-keyed record has no valid {SOURCE_HEADER} header",
                           SOURCE_HEADER, record.source)
        return record.source

    def _misrouted(self, record: RawRecord, event: InputEvent) -> bool:
        """True when the record must go through the re-key topic before it is applied."""
        if self.partition_of is None or record.topic == REKEYED:
            return False  # no partitions (the replay); re-keyed records are keyed by us
        uid = event.user_id.encode()
        return record.key != uid or self.partition_of(uid) != record.partition

    def process(self, records: Sequence[RawRecord],
                load: Callable[[str], UserState | None],
                reload: Callable[[str], UserState | None] | None = None) -> BatchResult:
        """Apply ``records`` in order; ``load`` reads a user's stored state (None: new).

        The engine updates a state in place, so after a failed record the user's state is
        rebuilt from ``reload``, which must return a *fresh* copy of the state as stored
        before this batch (``load`` may hand out a cached object: it defaults to ``load``
        for callers whose ``load`` already decodes afresh).
        """
        reload = reload or load
        out = BatchResult()
        # The records applied per user in this batch, to rebuild a state after a failure.
        history: dict[str, list[tuple[InputEvent, Source, bool]]] = {}
        for record in records:
            try:
                logical = self._logical(record)
                event = decode(logical, record.value, self.limits)
            except BadInput as exc:
                out.dead_letters[(record.source or record.topic, exc.code)] += 1
                out.outputs.append(dead_letter(record, exc))
                continue
            if self._misrouted(record, event):
                out.rekeyed[logical] += 1
                out.outputs.append(Output(REKEYED, event.user_id, {
                    "raw": record.value, "source": logical}))
                continue
            uid = event.user_id
            state = out.states[uid] if uid in out.states else load(uid)
            # A redelivery is recognised by the offset in the topic the record was read from:
            # a re-keyed record's offset counts in the re-key topic, unrelated to its source
            # topic's offsets (compared with them, it passed for a redelivery and was dropped).
            source = Source(record.topic, record.partition, record.offset)
            done = history.setdefault(uid, [])
            try:
                result = self.engine.step(state, event, source)
            except Exception as exc:  # a poison record must not stop the stream
                if isinstance(exc, CommandRejected):
                    error = BadInput(exc.code, str(exc), exc.field)
                else:
                    out.errors += 1
                    error = BadInput("processing_error", f"{type(exc).__name__}: {exc}")
                # The step may have half-updated the state: rebuild it without this record,
                # and remember the record as read so a redelivery is a duplicate.
                out.states[uid] = self._rebuild(uid, reload, done)
                self.engine.mark_read(out.states[uid], event, source)
                done.append((event, source, False))
                out.dead_letters[(logical, error.code)] += 1
                out.outputs.append(dead_letter(record, error))
                continue
            out.states[uid] = result.state
            done.append((event, source, True))
            if result.duplicate:
                out.duplicates[(logical, result.duplicate)] += 1
                continue
            out.applied.append(Applied(record, event, result))
            out.outputs.extend(result.outputs)
        return out

    def _rebuild(self, uid: str, load: Callable[[str], UserState | None],
                 done: list[tuple[InputEvent, Source, bool]]) -> UserState:
        """The user's state before the failed record: the stored state with this batch's
        earlier records re-applied (their outputs are already in the batch)."""
        state = load(uid)
        for event, source, ok in done:
            if state is None:
                state = self.engine.new_state(uid, event.ts)
            if ok:
                state = self.engine.step(state, event, source).state
            else:
                self.engine.mark_read(state, event, source)
        return state if state is not None else self.engine.new_state(uid, 0)

