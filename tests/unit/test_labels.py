"""The delayed-label join: each installment's outcome teaches the model once, with the features
the user had when the installment was issued."""

from __future__ import annotations

from typing import Any

import orjson

from features import FeatureConfig
from features.names import FEATURE_NAMES
from lab.replay import Replay
from policies.engine import LABELS, Engine
from policies.scorer import Trainer
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord
from streams.settings import DEFAULT_POLICY

T0 = 1_767_225_600_000
DAY = 86_400_000


def rec(topic: str, **value: Any) -> LogRecord:
    value.setdefault("user_id", "u1")
    return LogRecord(topic, value["user_id"].encode(), orjson.dumps(value))


def due(eid: str, inst: str, day: int) -> LogRecord:
    return rec("repayments", event_id=eid, ts=T0 + day * DAY, kind="due", installment_id=inst,
               amount_due=10_000, due_ts=T0 + (day + 20) * DAY, currency="CNY")


def paid(eid: str, inst: str, day: int, amount: int = 10_000) -> LogRecord:
    return rec("repayments", event_id=eid, ts=T0 + day * DAY, kind="paid", installment_id=inst,
               amount_paid=amount, currency="CNY")


def overdue(eid: str, inst: str, day: int, dpd: int) -> LogRecord:
    return rec("repayments", event_id=eid, ts=T0 + day * DAY, kind="overdue",
               installment_id=inst, days_past_due=dpd)


def labels_of(log: list[LogRecord]) -> tuple[list[dict[str, Any]], Replay]:
    replay = Replay(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                    Limits("CNY"))
    return [o.value for o in replay.run(log) if o.topic == LABELS], replay


def test_each_outcome_is_one_example_with_the_features_at_issue() -> None:
    log = [
        rec("account-events", event_id="o", ts=T0, kind="opened", initial_limit=500_000,
            currency="CNY"),
        rec("transactions", event_id="t1", ts=T0 + DAY, kind="purchase", amount=90_000,
            currency="CNY"),
        due("d1", "i1", 2), paid("p1", "i1", 10),                   # on time -> 0
        due("d2", "i2", 32), paid("p2", "i2", 60),                  # paid 8 days late -> 0
        due("d3", "i3", 62), overdue("x3", "i3", 83, 1),            # 1 dpd: not yet a default
        due("d4", "i4", 92),                                        # issued in arrears
        overdue("x3b", "i3", 112, 30),                              # 30 dpd -> 1
        overdue("x3c", "i3", 142, 60),                              # a later notice: no 2nd
        overdue("x4", "i4", 142, 30),                               # 30 dpd -> 1 (arrears)
        paid("p3", "i3", 145),                                      # paid after: no 2nd
        due("d5", "i5", 150),                                       # never resolves
    ]
    labels, replay = labels_of(log)
    # The default policy's definition: 30 or more days past due (label_dpd = 30).
    assert [(v["installment_id"], v["label"], v["segment"]) for v in labels] == [
        ("i1", 0, "current_thin"), ("i2", 0, "current_thin"), ("i3", 1, "current_thin"),
        ("i4", 1, "arrears")]
    assert all(list(v["x"]) == list(FEATURE_NAMES) for v in labels)
    # The snapshot is the vector at issue time: the purchase before i1 was issued is in it.
    assert labels[0]["x"]["spend_count_30d"] == 1.0
    assert len({v["event_id"] for v in labels}) == 4
    assert replay.states["u1"].view()["pending_labels"] == 1  # i5 waits


def test_arrears_at_issue_labels_are_judged_apart_and_never_learnt() -> None:
    trainer = Trainer("logistic")
    current = {"overdue_amount": 0.0, "utilization": 0.4}
    arrears = {"overdue_amount": 500.0, "utilization": 0.9}
    assert trainer.learn(current, 0, offset=0) is True
    assert trainer.learn(arrears, 1, offset=1) is False  # scored, not learnt
    assert trainer.model.n_learned == 1 and trainer.labels_offset == 1
    assert trainer.quality.n == 1  # the gate's quality: what the model learns from
    assert {s: q.n for s, q in trainer.segments.items()} == {
        "current_thin": 1, "current_established": 0, "arrears": 1}
    assert trainer.learn(arrears, 1, offset=1) is False  # a replayed offset changes nothing
    assert trainer.segments["arrears"].n == 1


def test_duplicated_and_replayed_outcomes_teach_nothing_twice() -> None:
    log = [due("d1", "i1", 0), paid("p1", "i1", 5), paid("p1", "i1", 5),  # same event_id
           paid("p1-retry", "i1", 6)]                                       # a second payment
    labels, _ = labels_of(log)
    assert [(v["installment_id"], v["label"]) for v in labels] == [("i1", 0)]


def test_a_partial_payment_is_not_an_outcome() -> None:
    labels, replay = labels_of([due("d1", "i1", 0), paid("p1", "i1", 5, amount=4_000)])
    assert labels == []
    assert replay.states["u1"].view()["pending_labels"] == 1


def test_an_installment_that_never_resolves_expires_and_is_counted() -> None:
    horizon = load_policy(DEFAULT_POLICY).model.label_horizon_days
    log = [due("d1", "i1", 0),
           rec("transactions", event_id="late", ts=T0 + (20 + horizon + 1) * DAY,
               kind="inflow", amount=1, currency="CNY")]
    replay = Replay(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                    Limits("CNY"))
    outputs = list(replay.run(log[:1]))
    chunk = replay.processor.process(
        [replay._raw(log[1])], replay.states.get)  # one more record, to see its counts
    assert not [o for o in outputs if o.topic == LABELS]
    assert [a.result.expired_labels for a in chunk.applied] == [1]
    assert chunk.states["u1"].view()["pending_labels"] == 0
