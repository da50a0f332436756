"""A record whose processing raises leaves no trace in the user's state: it goes to
dead-letter and the state is the one the other records make."""

from __future__ import annotations

import pytest

from features import FeatureConfig
from lab.replay import Replay
from policies.engine import Engine, Source, StepResult, UserState
from policies.processor import REKEYED, Processor, RawRecord
from policies.spec import load_policy
from streams.codec import Limits
from streams.records import InputEvent
from streams.settings import DEFAULT_POLICY
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


def test_a_redelivered_failed_record_is_a_duplicate_not_a_second_dead_letter() -> None:
    policy = load_policy(DEFAULT_POLICY)
    rules = Engine.rules_only(policy, FeatureConfig())
    replay = Replay(HalfWayFault(policy, FeatureConfig(), rules.risk), Limits("CNY"))
    record = next(r for r in good_payer().log() if POISON in r.value)
    raw = RawRecord(record.topic, 0, 41, record.key, record.value)
    first = replay.processor.process([raw], replay.states.get)
    assert sum(first.dead_letters.values()) == 1
    again = replay.processor.process([raw], first.states.get)
    assert dict(again.duplicates) == {("transactions", "offset"): 1}
    assert not again.dead_letters



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
