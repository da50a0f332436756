"""A record whose processing raises leaves no trace in the user's state: it goes to
dead-letter and the state is the one the other records make."""

from __future__ import annotations

import pytest

from features import FeatureConfig
from policies.engine import Engine, Source, StepResult, UserState
from policies.processor import RawRecord
from policies.spec import load_policy
from streams.codec import Limits
from streams.records import InputEvent
from streams.replay import Replay
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
    import streams.replay

    monkeypatch.setattr(streams.replay, "CHUNK", chunk)
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

