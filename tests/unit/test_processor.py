"""A record whose processing raises leaves no trace in the user's state: it goes to
dead-letter and the state is the one the other records make."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from features import FeatureConfig
from features.names import FEATURE_NAMES, FEATURE_SET
from lab.replay import Replay
from policies.engine import Engine, Output, Source, StepResult, UserState
from policies.processor import REKEYED, BatchResult, Processor, RawRecord
from policies.spec import load_policy
from streams.codec import Limits, encode
from streams.kafka_io import LogRecord, parse_log_line
from streams.records import InputEvent
from streams.settings import DEFAULT_POLICY, Settings
from tests.stories import good_payer

POISON = b"story-grow-5"  # the event_id of one purchase in the story


class HalfWayFault(Engine):
    """Applies the poison record fully, then raises: the worst case for state isolation."""

    def step(self, state: UserState | None, event: InputEvent, source: Source) -> StepResult:
        result = super().step(state, event, source)
        if event.event_id.encode() == POISON and not result.duplicate:
            raise RuntimeError("fault after the state was updated")
        return result


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_a_failed_record_is_dead_lettered_and_undone(chunk: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.replay

    monkeypatch.setattr(lab.replay, "CHUNK", chunk)
    policy = load_policy(DEFAULT_POLICY)
    log = good_payer().log()
    assert any(POISON in r.value for r in log)
    without = [r for r in log if POISON not in r.value]

    clean = Replay(Engine.rules_only(policy, FeatureConfig()), Limits("CNY"))
    expected = [o for o in clean.run(without)]

    faulty = Replay(HalfWayFault(policy, FeatureConfig(), clean.processor.engine.risk),
                    Limits("CNY"))
    got = list(faulty.run(log))
    dead = [o for o in got if o.topic == "dead-letter"]
    assert len(dead) == 1 and dead[0].value["error"]["code"] == "processing_error"
    assert [o for o in got if o.topic != "dead-letter"] == expected
    view = faulty.states["story-grow"].view()
    assert view == clean.states["story-grow"].view()


def test_a_redelivered_failed_record_makes_the_same_dead_letter_and_leaves_no_trace() -> None:
    """A crash between the dead letter and the commit redelivers the record: it is not a
    duplicate (it was never applied), it makes the same dead letter, with the same id."""
    policy = load_policy(DEFAULT_POLICY)
    rules = Engine.rules_only(policy, FeatureConfig())
    replay = Replay(HalfWayFault(policy, FeatureConfig(), rules.risk), Limits("CNY"))
    record = next(r for r in good_payer().log() if POISON in r.value)
    raw = RawRecord(record.topic, 0, 41, record.key, record.value)
    first = replay.processor.process([raw], replay.states.get)
    stored = first.states["story-grow"].encode()
    assert first.states["story-grow"].view()["events_applied"] == 0
    again = replay.processor.process([raw], lambda uid: UserState.decode(stored))
    assert not again.duplicates
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]
    assert dict(again.dead_letters) == {("transactions", "processing_error"): 1}


def test_re_keyed_records_are_applied_once_beside_the_users_direct_records() -> None:
    """A producer that keys some of a user's transactions by something else: those go
    through the re-key topic, whose offsets are unrelated to the transactions topic's. Each
    record is applied once, whatever the two topics' offsets, and a redelivery of either is
    a duplicate."""
    policy = load_policy(DEFAULT_POLICY)
    engine = Engine.rules_only(policy, FeatureConfig())
    log = good_payer().log()
    clean = Replay(engine, Limits("CNY"))
    list(clean.run(log))

    partition = 2
    worker = Processor(engine, Limits("CNY"), partition_of=lambda key: partition)
    states: dict[str, UserState] = {}
    read: list[RawRecord] = []
    next_offset = {"transactions": 1_000, "repayments": 1_000, "account-events": 1_000,
                   REKEYED: 0}
    mis_keyed = 0
    for n, rec in enumerate(log):
        key = rec.key
        if rec.topic == "transactions" and n % 3 == 0:
            key, mis_keyed = b"account-42", mis_keyed + 1
        raw = RawRecord(rec.topic, partition, next_offset[rec.topic], key, rec.value)
        next_offset[rec.topic] += 1
        batch = [raw]
        first = worker.process(batch, states.get)
        if first.rekeyed:  # the worker sends it to the re-key topic and reads it from there
            (out,) = first.outputs
            assert out.topic == REKEYED and out.value["source"] == "transactions"
            batch = [RawRecord(REKEYED, partition, next_offset[REKEYED], out.key.encode(),
                               out.value["raw"], source=out.value["source"])]
            next_offset[REKEYED] += 1
            first = worker.process(batch, states.get)
        assert len(first.applied) == 1, (n, dict(first.duplicates))
        states.update(first.states)
        read += batch
    assert mis_keyed > 5
    assert states["story-grow"].view() == clean.states["story-grow"].view()

    again = worker.process(read, states.get)
    assert not again.applied
    assert sum(again.duplicates.values()) == len(read) == len(log)
    assert set(again.duplicates) == {(t, "offset") for t in
                                     ("transactions", "repayments", "account-events")}


# -- re-drive, clock sanity, conflicting duplicates -------------------------------------------

T0 = 1_767_225_600_000
HOUR = 3_600_000
DEAD_LETTER_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "streams" / "schemas" / "dead-letter.json").read_text())


def event(topic: str, n: int, kind: str, ts: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    return topic, {"event_id": f"u1-{n}", "user_id": "u1", "ts": ts, "kind": kind, **fields}


def opened(n: int = 0) -> tuple[str, dict[str, Any]]:
    return event("account-events", n, "opened", T0, initial_limit=1_000_000, currency="CNY",
                 declared_income=2_000_000)


def purchase(n: int, ts: int, amount: int = 12_000) -> tuple[str, dict[str, Any]]:
    return event("transactions", n, "purchase", ts, amount=amount, currency="CNY",
                 merchant_category="5411", country="CN")


def command(n: int, kind: str, ts: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    return event("limit-commands", n, kind, ts, operator="ops-1", reason="test", **fields)


class Feed:
    """A processor fed one record at a time, each at the next offset of its topic, the record
    timestamped ``now`` (the broker's clock)."""

    def __init__(self) -> None:
        self.processor = Processor(Engine.rules_only(load_policy(DEFAULT_POLICY),
                                                     FeatureConfig()), Limits("CNY"))
        self.stored: dict[str, bytes] = {}  # as the worker's table: encoded states
        self.offsets: dict[str, int] = {}
        self.outputs: list[Output] = []

    def load(self, uid: str) -> UserState | None:
        raw = self.stored.get(uid)
        return None if raw is None else UserState.decode(raw)

    @property
    def states(self) -> dict[str, UserState]:
        return {uid: UserState.decode(raw) for uid, raw in self.stored.items()}

    def send(self, item: tuple[str, dict[str, Any]], now: int = 0,
             offset: int | None = None) -> BatchResult:
        topic, value = item
        if offset is None:
            offset = self.offsets.get(topic, 0)
            self.offsets[topic] = offset + 1
        raw = RawRecord(topic, 0, offset, b"u1", orjson.dumps(value),
                        timestamp_ms=now or value["ts"])
        result = self.processor.process([raw], self.load)
        self.stored.update((uid, state.encode()) for uid, state in result.states.items())
        self.outputs += result.outputs
        for out in result.outputs:
            if out.topic == "dead-letter":
                jsonschema.validate(orjson.loads(encode(out.value)), DEAD_LETTER_SCHEMA)
        return result

    def dead(self) -> list[dict[str, Any]]:
        return [o.value for o in self.outputs if o.topic == "dead-letter"]


def test_a_refused_command_applies_once_its_cause_is_fixed() -> None:
    """set_limit on a frozen account is refused; once unfrozen, the same event (re-driven: a
    new offset) applies — it was not recorded as seen."""
    feed = Feed()
    feed.send(opened())
    feed.send(command(1, "freeze", T0 + HOUR))
    set_limit = command(2, "set_limit", T0 + 2 * HOUR, new_limit=1_500_000, currency="CNY")
    refused = feed.send(set_limit)
    assert dict(refused.dead_letters) == {("limit-commands", "account_frozen"): 1}
    feed.send(command(3, "unfreeze", T0 + 3 * HOUR))
    redriven = feed.send(set_limit)
    assert len(redriven.applied) == 1 and not redriven.duplicates
    assert feed.states["u1"].view()["limit"] == 1_500_000
    # A second copy now is an upstream duplicate, as ever.
    assert dict(feed.send(set_limit).duplicates) == {("limit-commands", "event_id"): 1}


def test_a_refused_command_redelivered_makes_the_same_dead_letter() -> None:
    feed = Feed()
    feed.send(opened())
    bad = event("limit-commands", 1, "freeze", T0 + HOUR, operator="mallory", reason="x")
    feed.send(bad)
    feed.send(bad, offset=0)  # the same record again (a crash before the commit)
    first, second = feed.dead()
    assert first == second and first["error"]["code"] == "unknown_operator"


def test_an_event_from_the_future_is_dead_lettered_and_never_counts() -> None:
    """A purchase dated 2099 goes to dead-letter as ts_in_future; the user's later events
    give the same outputs and state as if it had never come."""
    log = [opened(), *[purchase(i, T0 + i * 6 * HOUR) for i in range(1, 8)]]
    future = purchase(99, 4_070_908_800_000)  # 2099-01-01
    with_it, without = Feed(), Feed()
    for n, item in enumerate(log):
        if n == 3:
            with_it.send(future, now=T0 + n * 6 * HOUR)
            without.offsets["transactions"] = without.offsets.get("transactions", 0) + 1
        with_it.send(item)
        without.send(item)
    (dead,) = with_it.dead()
    assert dead["error"]["code"] == "ts_in_future" and dead["error"]["value"] == future[1]["ts"]
    assert [o for o in with_it.outputs if o.topic != "dead-letter"] == without.outputs
    assert with_it.states["u1"].to_dict() == without.states["u1"].to_dict()


def test_the_allowed_skew_is_honoured() -> None:
    feed = Feed()
    feed.send(opened())
    day = Limits("CNY").max_clock_skew_ms
    assert feed.send(purchase(1, T0 + day), now=T0).applied
    assert feed.send(purchase(2, T0 + day + 1), now=T0).dead_letters


def test_a_conflicting_duplicate_is_dead_lettered_with_both_hashes() -> None:
    feed = Feed()
    feed.send(opened())
    first = purchase(1, T0 + HOUR, amount=12_000)
    feed.send(first)
    topic, value = first
    other = (topic, {**value, "amount": 99_000})
    result = feed.send(other)
    assert dict(result.dead_letters) == {("transactions", "conflicting_duplicate"): 1}
    (dead,) = feed.dead()
    stored = feed.states["u1"].recent_ids["u1-1"]
    assert dead["conflict"]["stored_payload_hash"] == stored
    assert dead["conflict"]["payload_hash"] != stored
    assert base64.b64decode(dead["raw_b64"]) == orjson.dumps(other[1])
    assert feed.states["u1"].view()["balance"] == 12_000
    # The same payload again is a plain duplicate.
    assert dict(feed.send(first).duplicates) == {("transactions", "event_id"): 1}


def test_states_stored_before_payload_hashes_still_catch_duplicates() -> None:
    feed = Feed()
    feed.send(opened())
    feed.send(purchase(1, T0 + HOUR))
    old = feed.states["u1"].to_dict()
    old["r"] = [eid for eid, _ in old["r"]]  # the former format: ids only
    feed.stored["u1"] = UserState.from_dict(old).encode()
    assert dict(feed.send(purchase(1, T0 + HOUR, amount=5)).duplicates) == {
        ("transactions", "event_id"): 1}


def test_pending_labels_of_another_feature_set_are_dropped_not_mislabelled() -> None:
    feed = Feed()
    feed.send(opened())
    feed.send(purchase(1, T0 + HOUR))
    feed.send(event("repayments", 2, "due", T0 + 2 * HOUR, installment_id="i1",
                    amount_due=5_000, due_ts=T0 + 480 * HOUR, currency="CNY"))
    state = feed.states["u1"]
    assert list(state.pending) == ["i1"] and len(state.pending["i1"].x) == len(FEATURE_NAMES)
    stored = state.to_dict()
    assert stored["fs"] == FEATURE_SET
    assert UserState.from_dict(stored).pending == state.pending  # the same set: kept
    # Stored by the code before the feature set changed: no set named, a shorter vector.
    old = {k: v for k, v in stored.items() if k != "fs"}
    old["p"] = {"i1": [T0 + 480 * HOUR, stored["p"]["i1"][1][:39]]}
    feed.stored["u1"] = UserState.from_dict(old).encode()
    assert UserState.decode(feed.stored["u1"]).pending == {}
    # Its payment resolves the installment without a label (and without failing).
    payment = event("repayments", 3, "paid", T0 + 3 * HOUR, installment_id="i1",
                    amount_paid=5_000, currency="CNY")
    current = Feed()
    current.stored["u1"], current.offsets = state.encode(), dict(feed.offsets)
    for f, labels in ((current, 1), (feed, 0)):  # labelled with the current set only
        out = f.send(payment)
        assert len(out.applied) == 1
        assert len([o for o in out.outputs if o.topic == "labels"]) == labels


# -- bounded dead letters ----------------------------------------------------------------------

def new_user(uid: str) -> UserState | None:
    return None


def dead_letter_size(out: Output) -> int:
    return len(encode(out.value)) + len(out.key.encode())


@pytest.mark.parametrize(("key", "value", "code"), [
    (b"u1", b'{"pad":"' + b"x" * 800_000 + b'"}', "oversized"),
    (b"k" * 600_000, b'{"a":1}', "oversized_key"),
    (b"\x01" * 1_024, b"{" * 200_000, "oversized"),
])
def test_a_dead_letter_never_exceeds_its_bound(key: bytes, value: bytes, code: str) -> None:
    limits = Limits("CNY")
    processor = Processor(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                          limits)
    raw = RawRecord("transactions", 3, 7, key, value, timestamp_ms=T0)
    (out,) = processor.process([raw], new_user).outputs
    assert out.value["error"]["code"] == code
    assert dead_letter_size(out) <= limits.dead_letter_max_bytes
    assert out.value["truncated"] is True
    assert out.value["raw_size"] == len(value) and out.value["key_size"] == len(key)
    assert out.value["raw_sha256"] == hashlib.sha256(value).hexdigest()
    kept = base64.b64decode(out.value["raw_b64"])
    assert value.startswith(kept)
    assert kept == value or len(kept) > limits.dead_letter_max_bytes // 2
    jsonschema.validate(orjson.loads(encode(out.value)), DEAD_LETTER_SCHEMA)


def test_a_record_within_the_limits_is_dead_lettered_whole() -> None:
    """The largest value and key the settings accept fit a dead letter, byte for byte."""
    settings = Settings()
    limits = Limits.from_settings(settings)
    processor = Processor(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                          limits)
    key = b"\x01" * settings.max_key_bytes  # the worst key for JSON: six bytes a character
    value = b"[" + b'"\\u0001",' * ((settings.max_message_bytes - 2) // 9) + b"1]"
    assert len(value) <= settings.max_message_bytes
    (out,) = processor.process([RawRecord("transactions", 0, 0, key, value)], new_user).outputs
    assert out.value["error"]["code"] == "not_an_object"
    assert out.value["truncated"] is False
    assert base64.b64decode(out.value["raw_b64"]) == value
    assert out.key.encode() == key


def test_a_long_exception_message_is_cut() -> None:
    class Raising(Engine):
        def step(self, state: UserState | None, event: InputEvent,
                 source: Source) -> StepResult:
            raise RuntimeError("x" * 2_000_000)

    policy = load_policy(DEFAULT_POLICY)
    processor = Processor(Raising(policy, FeatureConfig(),
                                  Engine.rules_only(policy, FeatureConfig()).risk),
                          Limits("CNY"))
    topic, value = purchase(1, T0)
    (out,) = processor.process([RawRecord(topic, 0, 0, b"u1", orjson.dumps(value))],
                               new_user).outputs
    assert out.value["truncated"] is False
    assert len(out.value["error"]["message"]) <= 1_001
    assert dead_letter_size(out) < 4_000


def test_a_replayed_log_checks_event_times_against_its_recorded_timestamps() -> None:
    """A log recorded with its records' timestamps (``limitstream consume`` prints them)
    replays as the worker ran it: the 2099 event is dead-lettered, the rest unchanged.

    One input topic after the account's opening: the replay's event-time merge of several
    topics would order a 2099 record behind the other topics' records (that order is the
    merge's, not the clock check's)."""
    def line(item: tuple[str, dict[str, Any]], timestamp: int) -> bytes:
        topic, value = item
        return orjson.dumps({"topic": topic, "key": "u1", "value": value,
                             "timestamp": timestamp})

    events = [opened(), *[purchase(i, T0 + i * 5 * HOUR, amount=10_000 * i)
                          for i in range(1, 13)]]
    published = [line(e, e[1]["ts"] + 60_000) for e in events]
    bad = line(purchase(99, 4_070_908_800_000), T0 + 30 * HOUR)  # 2099, sent on day 2
    policy = load_policy(DEFAULT_POLICY)
    runs: dict[str, tuple[list[Output], Replay]] = {}
    for name, lines in (("with", [*published[:7], bad, *published[7:]]),
                        ("without", published)):
        replay = Replay(Engine.rules_only(policy, FeatureConfig()), Limits("CNY"))
        runs[name] = (list(replay.run(parse_log_line(x) for x in lines)), replay)
    (dead,) = [o.value for o in runs["with"][0] if o.topic == "dead-letter"]
    assert dead["error"]["code"] == "ts_in_future"
    assert [o for o in runs["with"][0] if o.topic != "dead-letter"] == runs["without"][0]
    view = runs["with"][1].states["u1"].view()
    assert view == runs["without"][1].states["u1"].view()
    assert view["last_event_ts"] == T0 + 12 * 5 * HOUR


@pytest.mark.parametrize(("chunk", "epoch"), [(1, 20_000), (7, 50), (1000, 20_000)])
def test_a_failed_record_is_undone_while_the_model_learns(
        chunk: int, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay keeps a state's encoding once per epoch and rebuilds a failed user's state
    by re-applying its records since: exact across chunks, epochs and model installs."""
    import lab.replay
    from lab.learning import InProcessLearning
    from lab.simulate import SimConfig, simulate
    from policies.engine_factory import engine_for

    monkeypatch.setattr(lab.replay, "CHUNK", chunk)
    monkeypatch.setattr(lab.replay, "EPOCH_RECORDS", epoch)
    log = [LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))
           for line in simulate(SimConfig(users=12, days=150, seed=5))]
    # Late in the log, after models were installed: a purchase of a user with earlier events.
    spends = [r for r in log if b'"kind":"purchase"' in r.value]
    poison = orjson.loads(spends[len(spends) * 3 // 4].value)["event_id"].encode()
    settings = Settings()
    policy = load_policy(DEFAULT_POLICY)

    def replay(fault: bool, records: list[LogRecord]) -> tuple[Replay, list[Output]]:
        engine, scorer = engine_for(policy, settings)
        if fault:
            engine = PoisonFault(policy, FeatureConfig(), scorer.risk, poison)
        learning = InProcessLearning(scorer, snapshot_every=5)
        r = Replay(engine, Limits("CNY"), learning)
        return r, list(r.run(records))

    clean, expected = replay(False, without(log, poison))
    assert clean.learning is not None and clean.learning.snapshots >= 3
    faulty, got = replay(True, log)
    assert [o.value["error"]["code"] for o in got if o.topic == "dead-letter"] == [
        "processing_error"]
    assert [o for o in got if o.topic != "dead-letter"] == [
        o for o in expected if o.topic != "dead-letter"]
    assert {u: s.encode() for u, s in faulty.states.items()} == {
        u: s.encode() for u, s in clean.states.items()}


def without(log: list[LogRecord], event_id: bytes) -> list[LogRecord]:
    """``log`` with the record of ``event_id`` replaced by malformed JSON: dead-lettered
    before any state is touched, at the same place (the same chunks, the same offsets)."""
    return [LogRecord(r.topic, r.key, b"{") if event_id in r.value else r for r in log]


class PoisonFault(Engine):
    """Like :class:`HalfWayFault`, for a given event id."""

    def __init__(self, policy: Any, cfg: FeatureConfig, risk: Any, poison: bytes) -> None:
        super().__init__(policy, cfg, risk)
        self.poison = poison

    def step(self, state: UserState | None, event: InputEvent, source: Source) -> StepResult:
        result = super().step(state, event, source)
        if event.event_id.encode() == self.poison and not result.duplicate:
            raise RuntimeError("fault after the state was updated")
        return result


def test_a_rebuild_never_re_applies_records_under_another_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-applied records must meet the model they were applied under: an install starts
    a new epoch. Here a model is installed after every chunk, and the engine stamps the
    number of installs into each state it changes, so a record re-applied under another
    model than its first application leaves another state."""
    import lab.replay
    from lab.learning import InProcessLearning
    from lab.simulate import SimConfig, simulate
    from policies.engine_factory import scorer_for

    monkeypatch.setattr(lab.replay, "CHUNK", 5)
    log = [LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))
           for line in simulate(SimConfig(users=8, days=60, seed=9))]
    spends = [r for r in log if b'"kind":"purchase"' in r.value]
    poison = orjson.loads(spends[len(spends) * 3 // 4].value)["event_id"].encode()
    policy = load_policy(DEFAULT_POLICY)

    class EveryChunk(InProcessLearning):
        def observe(self, outputs: Any) -> None:
            self.snapshots += 1

    class Stamp(PoisonFault):
        def step(self, state: UserState | None, event: InputEvent,
                 source: Source) -> StepResult:
            result = super().step(state, event, source)
            result.state.version += learning.snapshots
            return result

    def replay(records: list[LogRecord]) -> Replay:
        r = Replay(Stamp(policy, FeatureConfig(), rules.risk, poison), Limits("CNY"), learning)
        list(r.run(records))
        return r

    rules = Engine.rules_only(policy, FeatureConfig())
    learning = EveryChunk(scorer_for(policy))
    expected = replay(without(log, poison)).states
    learning = EveryChunk(scorer_for(policy))
    got = replay(log)
    assert got.stats.dead_letters == 1
    assert {u: s.encode() for u, s in got.states.items()} == {
        u: s.encode() for u, s in expected.items()}
