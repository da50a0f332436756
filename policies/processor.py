"""From raw Kafka records to new user states and output messages — no I/O.

The worker (``agents/user_agent.py``) and ``limitstream replay`` both hand batches of raw
records to :class:`Processor` and get back the touched user states, the messages to send and
the counts for the metrics. Everything that can go wrong with a record ends as a dead letter:

* the key or the value is larger than the deployment accepts;
* the bytes are not a valid event of their topic (:class:`streams.codec.BadInput`);
* the event's ``ts`` is further ahead of its record's timestamp than the allowed clock skew
  (``ts_in_future``): one such event would move the user's clock and push every later real
  event out of every window;
* its ``event_id`` was applied with another payload (``conflicting_duplicate``);
* an operator command the policy refuses (:class:`policies.decide.CommandRejected`);
* processing raised: the user's state is rebuilt without that record, so a poison message
  never leaves a half-applied state behind.

A dead-lettered record leaves no trace in its user's state — it is not recorded as read — so
the same event, re-driven once its cause is fixed (``limitstream redrive``), applies; a
redelivery of the record itself (after a crash) makes the same dead letter, with the same id.
A dead letter is bounded (:func:`dead_letter`): it never approaches the producer's request
limit, whatever the record's size.

A valid record whose Kafka key is not its ``user_id`` (or that sits on another partition than
its key's) is sent to the internal re-key topic instead of being applied where it landed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from policies.decide import CommandRejected, Decision
from policies.engine import Engine, Output, Source, StepResult, UserState
from streams.codec import BadInput, Limits, decode, derive_id, encode, payload_hash, raw_b64
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
    #: The record's timestamp (the broker's; in the replay, the log's if it has one): the
    #: clock an event's ``ts`` is checked against, and the latency's start. 0: none.
    timestamp_ms: int = 0
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
    #: Per user, the records whose effect is in ``states[user]``, in order (applied ones and
    #: the duplicates that only moved an offset): what rebuilds that state from the one
    #: ``load`` gave (a caller that keeps states across batches may rebuild from older ones).
    steps: dict[str, list[tuple[InputEvent, Source]]] = field(default_factory=dict)

    @property
    def decisions(self) -> list[Decision]:
        return [d for a in self.applied for d in a.result.decisions]


def source_topic(record: RawRecord) -> str:
    """The logical topic a record came from: for a re-keyed record, its source header when that
    names an input topic (any other header is input, not a name: it is not repeated)."""
    return record.source if record.source in INPUT_TOPICS else record.topic


def dead_letter(record: RawRecord, error: BadInput, limits: Limits,
                conflict: dict[str, str] | None = None) -> Output:
    """The dead-letter message for a record: everything needed to inspect and re-drive it.

    Its key and encoded value together never exceed ``limits.dead_letter_max_bytes``: a key
    longer than ``limits.max_key_bytes`` is cut there, and the raw value is cut to what fits
    (``truncated``; ``raw_size`` and ``raw_sha256`` still describe the whole record). A record
    that passed the size checks always fits whole (``Settings.validate`` sees to it).
    """
    raw = record.value or b""
    key = record.key
    key_cut = key is not None and len(key) > limits.max_key_bytes
    key_text = None if key is None else key[: limits.max_key_bytes].decode("utf-8", "replace")
    value: dict[str, Any] = {
        "event_id": derive_id("dead-letter", record.topic, record.source, record.partition,
                              record.offset),
        "source_topic": source_topic(record),
        "via": REKEYED if record.topic == REKEYED else "",
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": key_text,
        "key_size": len(key or b""),
        "raw_b64": "",
        "raw_size": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": False,  # the longer of the two literals while the size is measured
        "error": error.as_dict(),
    }
    if conflict is not None:
        value["conflict"] = conflict
    if len(encode(value)) + len((key_text or "").encode()) > limits.dead_letter_max_bytes:
        # Only a key of escaped control characters gets here (six bytes each in JSON).
        value["key"] = key_text = ""
        key_cut = True
    room = limits.dead_letter_max_bytes - len(encode(value)) - len((key_text or "").encode())
    keep = max(0, room) // 4 * 3  # base64: 4 characters per 3 bytes
    value["raw_b64"] = raw_b64(raw[:keep])
    value["truncated"] = key_cut or keep < len(raw)
    return Output(DEAD_LETTER, key_text or "", value)


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

    def _check_key(self, record: RawRecord) -> None:
        if record.key is not None and len(record.key) > self.limits.max_key_bytes:
            raise BadInput("oversized_key", f"key is {len(record.key)} bytes, at most "
                           f"{self.limits.max_key_bytes}", "key", len(record.key))

    def _check_clock(self, record: RawRecord, event: InputEvent) -> None:
        """Refuse an event whose ``ts`` is too far ahead of its record's timestamp: a producer's
        clock gone wrong (or a typo) must not become the user's "now"."""
        if record.timestamp_ms <= 0:
            return  # no clock to compare with (a replayed log without timestamps)
        ahead = event.ts - record.timestamp_ms
        if ahead > self.limits.max_clock_skew_ms:
            raise BadInput("ts_in_future", f"ts is {ahead} ms ahead of the record's timestamp "
                           f"{record.timestamp_ms}: more than the allowed clock skew of "
                           f"{self.limits.max_clock_skew_ms} ms", "ts", event.ts)

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
        history = out.steps
        for record in records:
            try:
                self._check_key(record)
                logical = self._logical(record)
                event = decode(logical, record.value, self.limits)
                self._check_clock(record, event)
            except BadInput as exc:
                self._dead(out, record, exc)
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
                # The step may have half-updated the state: rebuild it without this record.
                # The record is not remembered as read: a redelivery makes the same dead
                # letter again, and the event, re-driven once fixed, applies.
                out.states[uid] = self._rebuild(uid, reload, done)
                self._dead(out, record, error)
                continue
            out.states[uid] = result.state
            if result.duplicate == "conflicting":
                conflict = {"stored_payload_hash": result.stored_hash,
                            "payload_hash": payload_hash(event)}
                self._dead(out, record, BadInput(
                    "conflicting_duplicate", f"event_id {event.event_id!r} was applied with "
                    "another payload", "event_id", event.event_id), conflict)
                continue
            done.append((event, source))
            if result.duplicate:
                out.duplicates[(logical, result.duplicate)] += 1
                continue
            out.applied.append(Applied(record, event, result))
            out.outputs.extend(result.outputs)
        return out

    def _dead(self, out: BatchResult, record: RawRecord, error: BadInput,
              conflict: dict[str, str] | None = None) -> None:
        out.dead_letters[(source_topic(record), error.code)] += 1
        out.outputs.append(dead_letter(record, error, self.limits, conflict))

    def _rebuild(self, uid: str, load: Callable[[str], UserState | None],
                 done: list[tuple[InputEvent, Source]]) -> UserState:
        """The user's state before the failed record: the stored state with this batch's
        earlier records re-applied (their outputs are already in the batch)."""
        state = load(uid)
        for event, source in done:
            state = self.engine.step(state, event, source).state
        return state if state is not None else self.engine.new_state(uid, 0)
