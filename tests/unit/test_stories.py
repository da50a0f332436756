"""The policy's stories, told by the pure core over event logs (the worker must tell the same,
see tests/e2e/test_scenarios.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from features import FeatureConfig
from lab.replay import Replay
from policies.engine import Engine
from policies.spec import load_policy
from streams.codec import Limits
from streams.settings import DEFAULT_POLICY
from tests.stories import STORIES, T0

DAY = 86_400_000


def told(name: str) -> list[dict[str, Any]]:
    engine = Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig())
    replay = Replay(engine, Limits("CNY"))
    outs = list(replay.run(STORIES[name]().log()))
    assert replay.stats.dead_letters == 0
    return [o.value for o in outs if o.topic == "decisions" and o.value["action"] != "HOLD"]


def actions(name: str) -> list[str]:
    return [d["action"] for d in told(name)]


def test_steady_good_payer_grows_by_at_most_the_step() -> None:
    decisions = told("grow")
    acts = [d["action"] for d in decisions]
    assert acts[0] == "OPEN" and len(acts) >= 3 and set(acts[1:]) == {"RAISE"}
    raises = decisions[1:]
    first = raises[0]
    assert first["new_limit"] == 1_200_000  # +20 %
    assert (first["ts"] - T0) // DAY >= 90  # not inside the first 90 days
    for a, b in itertools.pairwise(raises):
        assert b["ts"] - a["ts"] >= 30 * DAY  # the cooldown holds
        assert b["new_limit"] <= b["old_limit"] * 120 // 100  # the step holds
    assert "ONTIME_HISTORY" in first["reasons"] and "HIGH_UTILIZATION_DEMAND" in first["reasons"]


def test_income_collapse_cuts_the_limit() -> None:
    decisions = told("cut")
    acts = [d["action"] for d in decisions]
    assert acts[0] == "OPEN" and len(acts) >= 2 and set(acts[1:]) == {"CUT"}
    assert decisions[1]["reasons"][0] == "INCOME_DECLINE"
    # Observed distress closes the open-to-buy: the limit down to what is owed, and it follows
    # the balance down (payments lower it) even inside the cooldown.
    assert decisions[1]["new_limit"] < decisions[1]["old_limit"] // 2
    assert all(d["reasons"][0] in ("INCOME_DECLINE", "CASH_ADVANCE_RELIANCE")
               for d in decisions[1:])


def test_two_missed_repayments_suspend_then_the_ladder_leads_back_to_active() -> None:
    decisions = told("ladder")
    acts = [d["action"] for d in decisions]
    # The first arrears holds the available credit; the second missed repayment suspends.
    assert acts[:acts.index("SUSPEND")] == ["OPEN", "HOLD_LINE"]
    assert decisions[1]["reasons"][0] == "ARREARS_HOLD"
    assert acts[acts.index("SUSPEND"):] == ["SUSPEND", "REINSTATE", "PROMOTE", "PROMOTE",
                                              "RESTORE"]
    suspend = decisions[acts.index("SUSPEND")]
    assert suspend["new_limit"] == 0 and "MISSED_REPAYMENTS" in suspend["reasons"]
    pre = suspend["old_limit"]
    ladder = [d for d in decisions if d["action"] in ("REINSTATE", "PROMOTE", "RESTORE")]
    assert [d["new_limit"] for d in ladder] == [pre * p // 100 for p in (10, 25, 50, 100)]
    assert [d["new_stage"] for d in ladder] == [1, 2, 3, 0]
    assert ladder[-1]["new_status"] == "ACTIVE"
    # Each rung held for its observation period (30, 30, 30 days): cure to full limit in about
    # four months (the cure on day 100, the restore by day 100 + 4 x 30 + the statement gaps).
    gaps = [(b["ts"] - a["ts"]) / DAY for a, b in itertools.pairwise(ladder)]
    assert all(g >= 30 for g in gaps)
    assert (ladder[-1]["ts"] - T0) / DAY - 100 <= 135


def test_lateness_in_probation_relapses_to_suspended() -> None:
    acts = actions("relapse")
    assert "REINSTATE" in acts and acts[-1] == "RELAPSE"
    assert told("relapse")[-1]["new_status"] == "SUSPENDED"


def test_operator_freeze_and_unfreeze_are_audited() -> None:
    decisions = told("freeze")
    assert [d["action"] for d in decisions] == ["OPEN", "FREEZE", "UNFREEZE"]
    freeze = decisions[1]
    assert freeze["operator"] == "ops-1" and freeze["new_status"] == "FROZEN"
    assert decisions[2]["new_status"] == "ACTIVE"


def test_a_fraud_burst_is_held_within_its_first_transactions_then_released() -> None:
    decisions = told("fraud")
    acts = [d["action"] for d in decisions]
    assert acts == ["OPEN", "HOLD_LINE", "RELEASE"]
    hold, release = decisions[1], decisions[2]
    assert hold["new_status"] == "HOLD_FOR_REVIEW" and hold["new_limit"] == hold["old_limit"]
    assert hold["reasons"][0] in ("SPENDING_BURST", "SEVERE_ANOMALY")
    # Held at the burst's first, second or third purchase (7 minutes apart, from 17:10).
    assert hold["ts"] <= T0 + 99 * DAY + 17 * 3_600_000 + 24 * 60_000
    assert release["reasons"] == ["HOLD_REVIEW_TIMEOUT"] and release["new_status"] == "ACTIVE"


@pytest.mark.parametrize("name", list(STORIES))
def test_every_decision_explains_itself(name: str) -> None:
    for d in told(name):
        assert 1 <= len(d["reasons"]) <= 4
        assert len(d["policy_version"]) == 64 and d["model_version"]
