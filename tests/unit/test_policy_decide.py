"""The limit policy's stories, one test each, on hand-built observations (pure: no engine)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest

from features.outcome import Outcome
from features.state import new_state
from policies import (
    Account,
    Action,
    CommandRejected,
    Decision,
    Observation,
    Policy,
    Risk,
    Status,
    decide,
    is_decision_point,
    neutral_features,
    new_account,
    parse_policy,
)
from policies.reasons import REGISTRY
from policies.spec import load_policy
from streams.records import (
    AccountClosed,
    AccountOpened,
    IncomeReported,
    InputEvent,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    LimitCommand,
    Transaction,
)
from streams.settings import DEFAULT_POLICY

POLICY = load_policy(DEFAULT_POLICY)
T0 = 1_767_225_600_000  # 2026-01-01
DAY = 86_400_000
CONTRIB = (("late_count_12", 1.2), ("utilization", -0.3))

#: What a steady, established good payer looks like to the policy.
GOOD: dict[str, Any] = {
    "ontime_count_12": 6, "late_count_12": 0, "utilization": 0.75, "utilization_peak_30d": 0.85,
    "income_monthly": 1_000_000, "debt_to_income": 0.2, "inflow_trend": 1.0,
}


def at(day: float) -> int:
    return T0 + int(day * DAY)


_n = 0


def _eid() -> str:
    global _n
    _n += 1
    return f"e{_n}"


def tx(day: float, amount: int = 10_000) -> Transaction:
    return Transaction(_eid(), "u1", at(day), "purchase", amount, "CNY", "5411")


def paid(day: float, inst: str = "i1") -> InstallmentPaid:
    return InstallmentPaid(_eid(), "u1", at(day), inst, 10_000, "CNY")


def overdue(day: float, inst: str = "i1", dpd: int = 5) -> InstallmentOverdue:
    return InstallmentOverdue(_eid(), "u1", at(day), inst, dpd)


def opened(day: float, initial: int, income: int = 0) -> AccountOpened:
    return AccountOpened(_eid(), "u1", at(day), initial, "CNY", income)


def cmd(day: float, kind: Any, operator: str = "ops-1", new_limit: int = 0) -> LimitCommand:
    return LimitCommand(_eid(), "u1", at(day), kind, operator, "ticket 42", new_limit,
                        "CNY" if kind == "set_limit" else "")


def ontime(inst: str = "i1") -> Outcome:
    return Outcome(inst, "paid_in_full", 0, 10_000, T0)


def late(inst: str = "i1", dpd: int = 5) -> Outcome:
    return Outcome(inst, "overdue", dpd, 10_000, T0)


def obs(event: InputEvent, pd: float = 0.02, *, outcome: Outcome | None = None,
        anomaly: float | None = None, fallback: str = "", **features: float) -> Observation:
    """An observation: neutral features with ``features`` replaced, a score ``pd``."""
    risk = Risk(pd, "rules", "m-1", fallback, CONTRIB) if fallback else Risk(pd, "model", "m-1",
                                                                             "", CONTRIB)
    return Observation(event, neutral_features(**features), risk, outcome, anomaly)


def step(acc: Account, o: Observation, policy: Policy = POLICY) -> tuple[Account, Decision]:
    new, decisions = decide(acc, o, policy)
    assert len(decisions) == 1, decisions
    d = decisions[0]
    assert 1 <= len(d.reasons) <= 4 and all(r in REGISTRY for r in d.reasons)
    assert (d.old_limit, d.old_status, d.old_stage) == (acc.limit, acc.status, acc.stage)
    assert (d.new_limit, d.new_status, d.new_stage) == (new.limit, new.status, new.stage)
    return new, d


def account(day: float = 0, limit: int = 300_000, **kw: Any) -> Account:
    """An ACTIVE account opened on ``day`` (default limit overridden)."""
    return dataclasses.replace(new_account(POLICY, at(day)), limit=limit, **kw)


def suspended(day: float = 0, base: int = 400_000) -> Account:
    acc, d = step(account(-200, limit=base),
                  obs(overdue(day, dpd=40), outcome=late(dpd=40), late_count_12=1,
                      max_dpd_90d=40, overdue_amount=10_000))
    assert d.action is Action.SUSPEND and d.reasons[0] == "SEVERE_DELINQUENCY"
    return acc


# -- the stories ----------------------------------------------------------------------------


def test_steady_good_payer_grows_step_by_step_with_a_cooldown() -> None:
    acc = account(0)
    acc, d = step(acc, obs(paid(100), outcome=ontime(), **GOOD))
    assert d.action is Action.RAISE
    assert (d.old_limit, d.new_limit) == (300_000, 360_000)  # +20 %, a multiple of 1.00
    assert d.reasons == ("LOW_RISK_SCORE", "ONTIME_HISTORY", "HIGH_UTILIZATION_DEMAND",
                         "INCOME_SUPPORTS")
    assert d.top_features == CONTRIB  # the score drove it: its features are shown
    # inside the cooldown: nothing moves, and the decision says why
    acc, d = step(acc, obs(paid(120, "i2"), outcome=ontime("i2"), **GOOD))
    assert d.action is Action.HOLD and d.reasons == ("RECENT_LIMIT_CHANGE",)
    acc, d = step(acc, obs(paid(131, "i3"), outcome=ontime("i3"), **GOOD))
    assert (d.action, d.new_limit) == (Action.RAISE, 432_000)


def test_raise_is_bounded_by_the_absolute_step_and_the_income_cap() -> None:
    acc, d = step(account(0, limit=4_000_000), obs(paid(100), **{**GOOD, "income_monthly": 3e6}))
    assert d.new_limit - d.old_limit == POLICY.increase.max_step_abs
    acc, d = step(account(0, limit=1_100_000), obs(paid(100), **{**GOOD, "income_monthly": 4e5}))
    assert d.action is Action.RAISE and d.new_limit == 1_200_000  # 3 x 400,000.00 minor
    assert d.reasons[-1] == "INCOME_CAP"
    acc, d = step(acc, obs(paid(200), **{**GOOD, "income_monthly": 4e5}))
    assert d.action is Action.HOLD and d.reasons[0] == "AT_MAXIMUM_LIMIT"


@pytest.mark.parametrize(("change", "reason"), [
    ({"ontime_count_12": 1}, "FEW_ONTIME_PAYMENTS"),
    ({"late_count_12": 3}, "RECENT_LATE_PAYMENT"),
    ({"utilization": 0.1, "utilization_peak_30d": 0.2}, "LOW_UTILIZATION"),
    ({"income_monthly": 0}, "INCOME_NOT_VERIFIED"),
    ({"debt_to_income": 0.5}, "DTI_TOO_HIGH_FOR_INCREASE"),
    ({"inflow_trend": 0.8}, "INCOME_TREND_WEAK"),
    ({"overdue_amount": 5_000}, "ARREARS_OUTSTANDING"),
])
def test_a_raise_needs_every_condition(change: dict[str, float], reason: str) -> None:
    _, d = step(account(0), obs(paid(100), **{**GOOD, **change}))
    assert d.action is Action.HOLD and d.reasons == (reason,)


def test_hysteresis_a_middling_score_neither_raises_nor_cuts() -> None:
    # between increase.max_pd (0.05) and decrease.pd_cut (0.10)
    _, d = step(account(0), obs(paid(100), pd=0.08, **GOOD))
    assert (d.action, d.reasons) == (Action.HOLD, ("RISK_TOO_HIGH_FOR_INCREASE",))
    assert d.top_features == CONTRIB
    _, d = step(account(0), obs(paid(100), pd=0.10, **GOOD))
    assert (d.action, d.reasons, d.new_limit) == (Action.CUT, ("HIGH_RISK_SCORE",), 240_000)


def test_too_new_account_does_not_raise() -> None:
    _, d = step(account(0), obs(paid(60), **GOOD))
    assert d.reasons == ("ACCOUNT_TOO_NEW",)


def test_income_falls_limit_is_cut_once_per_cooldown_and_raises_wait() -> None:
    acc = account(0, limit=1_000_000)
    falling = {**GOOD, "inflow_trend": 0.4, "balance": 950_000}  # owes more than one step
    acc, d = step(acc, obs(tx(100), **falling))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 800_000, ("INCOME_DECLINE",))
    assert acc.last_cut_ts == at(100)
    acc, d = step(acc, obs(tx(110), **falling))
    assert (d.action, d.reasons) == (Action.HOLD, ("INCOME_DECLINE", "CUT_COOLDOWN"))
    acc, d = step(acc, obs(tx(131), **falling))
    assert (d.action, d.new_limit) == (Action.CUT, 640_000)
    # income back: no raise for decrease.raise_cooldown_days after the last cut
    acc, d = step(acc, obs(paid(200), **GOOD))
    assert d.action is Action.HOLD and d.reasons == ("RECENT_LIMIT_CUT",)
    acc, d = step(acc, obs(paid(222), **GOOD))
    assert d.action is Action.RAISE


def test_distress_closes_the_open_to_buy_but_a_score_cuts_one_step() -> None:
    # Observed distress (income decline with a second sign, cash-advance reliance): the limit
    # down to the balance.
    _, d = step(account(0, limit=1_000_000), obs(tx(100), **{
        **GOOD, "inflow_trend": 0.4, "balance": 312_345, "cash_advance_share_30d": 0.1}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 312_400, ("INCOME_DECLINE",))
    # A collapse (below a quarter of the previous months' inflow) on its own: the same.
    _, d = step(account(0, limit=1_000_000), obs(tx(100), **{**GOOD, "inflow_trend": 0.2,
                                                             "balance": 312_345}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 312_400, ("INCOME_DECLINE",))
    # Falling inflows alone (an irregular earner, a month's dip): one step, like a score.
    _, d = step(account(0, limit=1_000_000), obs(tx(100), **{**GOOD, "inflow_trend": 0.4,
                                                             "balance": 312_345}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 800_000, ("INCOME_DECLINE",))
    _, d = step(account(0, limit=1_000_000), obs(overdue(100, dpd=1), outcome=late(dpd=1), **{
        **GOOD, "inflow_trend": 0.4, "balance": 312_345, "overdue_amount": 10_000,
        "late_count_12": 1, "max_dpd_90d": 1}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 312_400, ("INCOME_DECLINE",))
    living_on_cash = {**GOOD, "cash_advance_share_30d": 0.6, "utilization": 0.5,
                      "balance": 500_000}
    _, d = step(account(0, limit=1_000_000), obs(tx(100), **living_on_cash))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 500_000, ("CASH_ADVANCE_RELIANCE",))
    # The score alone: one step, whatever is owed.
    _, d = step(account(0, limit=1_000_000), obs(tx(100), pd=0.2, **{**GOOD, "balance": 1.0}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 800_000, ("HIGH_RISK_SCORE",))


def test_reported_income_drop_clamps_at_once_even_in_a_cooldown() -> None:
    acc, _ = step(account(0, limit=1_000_000), obs(tx(100), **{**GOOD, "inflow_trend": 0.4,
                                                                "balance": 950_000}))
    ev = IncomeReported(_eid(), "u1", at(101), 150_000, "CNY")
    acc, d = step(acc, obs(ev, **{**GOOD, "income_monthly": 150_000, "inflow_trend": 0.4,
                                  "balance": 950_000}))
    assert (d.action, d.new_limit, d.reasons) == (Action.CUT, 450_000, ("INCOME_CAP",))
    assert acc.last_cut_ts == at(100)  # a clamp is not a risk cut: it does not restart it


def test_cuts_stop_at_the_floor() -> None:
    _, d = step(account(0, limit=55_000), obs(tx(100), pd=0.2, ontime_count_12=6))
    assert (d.action, d.new_limit) == (Action.CUT, 50_000)
    _, d = step(account(0, limit=50_000), obs(tx(100), pd=0.2, ontime_count_12=6))
    assert (d.action, d.reasons) == (Action.HOLD, ("HIGH_RISK_SCORE", "AT_MINIMUM_LIMIT"))


def test_utilization_spike_cuts_only_with_a_late_repayment() -> None:
    _, d = step(account(0), obs(tx(100), utilization=0.97, late_count_12=1))
    assert d.action is Action.HOLD
    _, d = step(account(0), obs(overdue(100), outcome=late(), utilization=0.97, late_count_12=1))
    assert (d.action, d.reasons) == (Action.CUT, ("UTILIZATION_SPIKE_WITH_LATENESS",))


def test_two_missed_repayments_suspend_and_keep_the_limit_to_restore() -> None:
    acc = account(0, limit=400_000)
    acc, d = step(acc, obs(overdue(100, "i1", 1), outcome=late("i1", 1), late_count_12=1,
                           overdue_amount=10_000, max_dpd_90d=1))
    assert acc.status is Status.ACTIVE and d.action is Action.HOLD
    acc, d = step(acc, obs(overdue(130, "i2"), outcome=late("i2"), late_count_12=2,
                           overdue_amount=20_000))
    assert (d.action, d.reasons) == (Action.SUSPEND, ("MISSED_REPAYMENTS",))
    assert (acc.status, acc.limit, acc.pre_suspension_limit) == (Status.SUSPENDED, 0, 400_000)
    assert d.top_features == ()  # no score-based reason: no features shown


def test_a_late_history_alone_does_not_suspend_again() -> None:
    # restored after a suspension: late_count_12 still counts the old misses
    _, d = step(account(0), obs(paid(100), late_count_12=2, max_dpd_90d=0))
    assert d.action is Action.HOLD


def test_a_very_high_score_suspends_only_an_account_in_arrears() -> None:
    # Guardrail: a score alone never suspends (it may cut one step, with history).
    _, d = step(account(0), obs(tx(100), pd=0.6, ontime_count_12=6))
    assert (d.action, d.reasons, d.new_limit) == (Action.CUT, ("HIGH_RISK_SCORE",), 240_000)
    # A technical day late is not the delinquency that lets the score suspend...
    _, d = step(account(0), obs(overdue(100, dpd=1), outcome=late(dpd=1), pd=0.6,
                                overdue_amount=10_000, max_dpd_90d=1, late_count_12=1))
    assert d.action is not Action.SUSPEND
    # ...an arrears as old as a hold is.
    _, d = step(account(0), obs(overdue(100, dpd=5), outcome=late(dpd=5), pd=0.6,
                                overdue_amount=10_000, max_dpd_90d=5, late_count_12=1))
    assert (d.action, d.reasons) == (Action.SUSPEND, ("VERY_HIGH_RISK_SCORE",))


def test_cold_start_a_score_cannot_cut_a_new_account_but_blocks_its_raises() -> None:
    x = {**GOOD, "ontime_count_12": 2}  # two resolved installments: below the cold start
    _, d = step(account(0), obs(paid(100), pd=0.3, **x))
    assert d.action is Action.HOLD and "HIGH_RISK_SCORE" not in d.reasons
    assert "RISK_TOO_HIGH_FOR_INCREASE" in d.reasons


def test_a_non_actionable_main_driver_cannot_cut_and_is_never_shown() -> None:
    o = obs(tx(100), pd=0.3, ontime_count_12=6)
    tenure = dataclasses.replace(o, risk=dataclasses.replace(
        o.risk, contributions=(("days_since_open", 2.0), ("utilization", 0.5))))
    _, d = step(account(0), tenure)
    assert d.action is Action.HOLD  # the main reason would be tenure: no cut
    # An actionable main driver cuts; a non-actionable one is left out of what is shown.
    driven = dataclasses.replace(o, risk=dataclasses.replace(
        o.risk, contributions=(("utilization", 2.0), ("days_since_open", 0.5))))
    _, d = step(account(0), driven)
    assert d.action is Action.CUT and d.top_features == (("utilization", 2.0),)


def test_payment_behaviour_and_debt_trends_are_actionable_reasons() -> None:
    # Paying only the minimum, a growing balance carried, debt elsewhere rising: each is the
    # customer's to change, so each may be the main reason of a score cut, and is shown.
    o = obs(tx(100), pd=0.3, ontime_count_12=6)
    for name in ("payment_ratio_3", "min_payments_3", "amount_due_trend", "liabilities_trend"):
        driven = dataclasses.replace(o, risk=dataclasses.replace(
            o.risk, contributions=((name, 2.0), ("days_since_open", 0.5))))
        _, d = step(account(0), driven)
        assert d.action is Action.CUT and d.top_features == ((name, 2.0),), name


def test_no_slow_cut_soon_after_a_raise_without_new_evidence() -> None:
    acc, d = step(account(0), obs(paid(100), **GOOD))
    assert d.action is Action.RAISE
    acc, d = step(acc, obs(tx(110), pd=0.3, **{**GOOD, "debt_to_income": 0.9}))
    assert d.action is Action.HOLD
    assert d.reasons == ("HIGH_RISK_SCORE", "HIGH_DEBT_TO_INCOME",
                         "RECENT_RAISE_NO_NEW_EVIDENCE")
    # A late repayment since the raise is new evidence: the cut is taken.
    late_acc = dataclasses.replace(acc, last_late_ts=at(105))
    _, d = step(late_acc, obs(tx(110), pd=0.3, **{**GOOD, "debt_to_income": 0.9}))
    assert d.action is Action.CUT
    # After the cooldown the guard lifts.
    _, d = step(acc, obs(tx(131), pd=0.3, **{**GOOD, "debt_to_income": 0.9}))
    assert d.action is Action.CUT


@pytest.mark.parametrize(("kw", "reason"), [
    ({"anomaly": 0.95}, "SEVERE_ANOMALY"),
    ({"anomaly_burst_1h": 1.3}, "SPENDING_BURST"),
    ({"spend_sum_24h": 200_000, "spend_velocity_24h": 12, "spend_count_24h": 6},
     "LINE_DRAWN_IN_A_DAY"),
])
def test_an_anomaly_holds_the_line_until_the_timeout(kw: dict[str, Any], reason: str) -> None:
    acc, d = step(account(0), obs(tx(100), **kw))
    assert (d.action, d.reasons, acc.status, acc.limit) == (
        Action.HOLD_LINE, (reason,), Status.HOLD_FOR_REVIEW, 300_000)
    assert acc.hold_until_ts == at(100 + POLICY.hold.review_days)
    assert d.hold_until_ts == acc.hold_until_ts  # the declared end travels with the hold
    acc, d = step(acc, obs(paid(101), **GOOD))
    assert (d.action, d.reasons) == (Action.HOLD, ("ACCOUNT_HELD",))
    acc, d = step(acc, obs(paid(100 + POLICY.hold.review_days), **GOOD))
    assert (d.action, d.reasons, acc.status) == (Action.RELEASE, ("HOLD_REVIEW_TIMEOUT",),
                                                 Status.ACTIVE)
    # Anomalous spending is not demand: no raise soon after a hold.
    _, d = step(acc, obs(paid(130), **GOOD))
    assert "RECENT_REVIEW_HOLD" in d.reasons and d.action is Action.HOLD


def test_an_operator_releases_a_held_line() -> None:
    acc, _ = step(account(0), obs(tx(100), anomaly=0.95))
    new, ds = decide(acc, obs(cmd(101, "unfreeze")), POLICY)
    assert [d.action for d in ds] == [Action.RELEASE]
    assert (new.status, new.limit, new.hold_until_ts) == (Status.ACTIVE, 300_000, 0)
    with pytest.raises(CommandRejected):
        decide(acc, obs(cmd(101, "set_limit", new_limit=1_000)), POLICY)


def test_arrears_hold_the_line_until_cured_or_suspend() -> None:
    acc, d = step(account(0), obs(overdue(100, dpd=5), outcome=late(dpd=5), late_count_12=1,
                                  overdue_amount=10_000, max_dpd_90d=5))
    assert (d.action, d.reasons, acc.status) == (Action.HOLD_LINE, ("ARREARS_HOLD",),
                                                 Status.HOLD_FOR_REVIEW)
    assert acc.hold_until_ts == 0  # no timeout: until cured
    _, d = step(acc, obs(tx(200), late_count_12=1, overdue_amount=10_000, max_dpd_90d=5))
    assert (d.action, d.reasons) == (Action.HOLD, ("ACCOUNT_HELD", "ARREARS_OUTSTANDING"))
    cured, d = step(acc, obs(paid(110), late_count_12=1, max_dpd_90d=10))
    assert (d.action, d.reasons, cured.status, cured.limit) == (
        Action.RELEASE, ("ARREARS_CLEARED",), Status.ACTIVE, 300_000)
    gone, d = step(acc, obs(overdue(130, dpd=30), outcome=late(dpd=30), late_count_12=1,
                            overdue_amount=10_000, max_dpd_90d=30))
    assert (d.action, gone.status, gone.pre_suspension_limit) == (
        Action.SUSPEND, Status.SUSPENDED, 300_000)


def test_the_ladder_restores_the_limit_before_the_episode_cuts() -> None:
    acc, d = step(account(0, limit=500_000), obs(tx(100), **{**GOOD, "inflow_trend": 0.4,
                                                             "balance": 480_000}))
    assert (d.action, acc.limit, acc.uncut_limit) == (Action.CUT, 400_000, 500_000)
    acc, d = step(acc, obs(overdue(130, dpd=30), outcome=late(dpd=30), late_count_12=1,
                           overdue_amount=10_000, max_dpd_90d=30))
    assert (d.action, acc.pre_suspension_limit) == (Action.SUSPEND, 500_000)


def test_a_new_account_is_held_at_a_smaller_share_of_its_line_drawn_in_a_day() -> None:
    # 55 % of the line in 24 hours at 12 times the own daily rate: held on an account opened
    # 30 days ago (a bust-out draws a new line over a day or two), not on an old one (60 %).
    day = {**GOOD, "spend_sum_24h": 550_000, "spend_velocity_24h": 12.0, "spend_count_24h": 6}
    young, d = step(account(70, limit=1_000_000, opened_ts=at(70)), obs(tx(100), **day))
    assert (d.action, d.reasons, young.status) == (Action.HOLD_LINE, ("LINE_DRAWN_IN_A_DAY",),
                                                   Status.HOLD_FOR_REVIEW)
    _, d = step(account(0, limit=1_000_000, opened_ts=at(0)), obs(tx(100), **day))
    assert d.action is not Action.HOLD_LINE
    # The spend that crosses the new account's share is a decision point.
    f = new_state()
    f.hours = {at(100) // 3_600_000: [3, 550_000, 200_000]}  # 24 h: 3 spends, 550,000
    for opened_day, point in ((70, True), (0, False)):
        acc = account(opened_day, limit=1_000_000, opened_ts=at(opened_day),
                      last_review_ts=at(99))
        assert is_decision_point(acc, tx(100, 50_000), None, POLICY, f) is point


@pytest.mark.parametrize("opened_day", [70, 0])  # inside and beyond hold.new_account_days
def test_a_line_drawn_by_a_few_big_ticket_purchases_is_not_held(opened_day: int) -> None:
    # 70 % of the line in 24 hours at 20 times the own daily rate: held when spread over as
    # many spends as hold.day_spend_min_count (a bust-out, a takeover), not when one to three
    # big-ticket purchases drew it (judged by their own anomaly score instead).
    n = POLICY.hold.day_spend_min_count
    day = {**GOOD, "spend_sum_24h": 700_000, "spend_velocity_24h": 20.0}
    acc = account(opened_day, limit=1_000_000, opened_ts=at(opened_day))
    for count in range(1, n):
        new, d = step(acc, obs(tx(100), **day, spend_count_24h=count))
        assert d.action is not Action.HOLD_LINE and new.status is Status.ACTIVE, count
    _, d = step(acc, obs(tx(100), **day, spend_count_24h=n))
    assert (d.action, d.reasons) == (Action.HOLD_LINE, ("LINE_DRAWN_IN_A_DAY",))


def test_a_cut_in_a_delinquency_episode_comes_back_once_cured() -> None:
    # Cut at a missed repayment (1 day past due) with the line nearly full.
    acc, d = step(account(0, limit=500_000),
                  obs(overdue(100, dpd=1), outcome=late(dpd=1), utilization=0.97,
                      late_count_12=1, overdue_amount=10_000, max_dpd_90d=1))
    assert (d.action, acc.limit, acc.uncut_limit) == (Action.CUT, 400_000, 500_000)
    cured = {**GOOD, "late_count_12": 1, "max_dpd_90d": 10}
    # Cured (arrears paid late): not yet, nothing paid on time since the lateness.
    acc, d = step(acc, obs(paid(110), outcome=Outcome("i1", "paid_in_full", 10, 10_000, T0),
                           days_since_missed=0, days_since_ontime=40, **cured))
    assert d.action is Action.HOLD and acc.limit == 400_000
    after = {**cured, "days_since_missed": 40, "days_since_ontime": 5}
    # An on-time repayment since, but inside the clean period after the lateness (30 days).
    _, d = step(acc, obs(paid(135, "i2"), outcome=ontime("i2"), **after))
    assert d.action is Action.HOLD
    # ... or with arrears, or a score above reinstate.max_pd: no.
    _, d = step(acc, obs(paid(145, "i2"), **{**after, "overdue_amount": 10_000}))
    assert d.action is Action.HOLD_LINE  # the arrears hold the line again
    _, d = step(acc, obs(paid(145, "i2"), pd=0.2, **after))
    assert d.action is not Action.RAISE
    new, d = step(acc, obs(paid(145, "i2"), outcome=ontime("i2"), **after))
    assert (d.action, d.new_limit, d.reasons[0]) == (Action.RAISE, 500_000,
                                                     "CUT_RESTORED_AFTER_CURE")
    assert new.uncut_limit == 0 and new.last_raise_ts == at(145)


def test_a_cut_without_a_lateness_near_it_waits_for_raises() -> None:
    # A score cut far from any lateness is not undone by the cure path: raises earn it back.
    acc, _ = step(account(0, limit=500_000, last_late_ts=at(-200)),
                  obs(tx(100), pd=0.2, **{**GOOD, "balance": 1.0}))
    assert (acc.limit, acc.uncut_limit) == (400_000, 500_000)
    _, d = step(acc, obs(paid(150), **{**GOOD, "days_since_missed": 300,
                                       "days_since_ontime": 5}))
    assert d.action is Action.HOLD and d.reasons == ("RECENT_LIMIT_CUT",)


def test_reinstatement_waits_for_period_arrears_and_score() -> None:
    acc = suspended(0)
    _, d = step(acc, obs(paid(10), overdue_amount=0))
    assert d.reasons == ("ACCOUNT_SUSPENDED", "SUSPENSION_PERIOD_NOT_MET")
    _, d = step(acc, obs(paid(31), overdue_amount=10_000))
    assert d.reasons == ("ACCOUNT_SUSPENDED", "ARREARS_OUTSTANDING")
    _, d = step(acc, obs(paid(31), pd=0.2))
    assert d.reasons == ("ACCOUNT_SUSPENDED", "RISK_TOO_HIGH_FOR_REINSTATEMENT")
    new, d = step(acc, obs(paid(31), pd=0.08))
    assert (d.action, new.status, new.stage, new.limit) == (Action.REINSTATE, Status.PROBATION,
                                                            1, 40_000)
    assert new.pre_suspension_limit == 400_000


def test_a_new_overdue_notice_restarts_the_clean_period_but_paying_arrears_does_not() -> None:
    acc = suspended(0)
    acc, d = step(acc, obs(overdue(20, dpd=60), outcome=late(dpd=60), overdue_amount=10_000))
    assert d.action is Action.HOLD and acc.last_late_ts == at(20)
    acc, _ = step(acc, obs(paid(25), outcome=Outcome("i1", "paid_in_full", 65, 10_000, T0)))
    assert acc.last_late_ts == at(20)  # the cure is not a new lateness
    _, d = step(acc, obs(paid(40, "i2")))
    assert d.reasons == ("ACCOUNT_SUSPENDED", "RECENT_LATE_PAYMENT")
    _, d = step(acc, obs(paid(50, "i2")))
    assert d.action is Action.REINSTATE


def test_probation_climbs_the_ladder_one_stage_at_a_time_to_active() -> None:
    acc, d = step(suspended(0), obs(paid(31)))
    assert (acc.stage, acc.limit) == (1, 40_000)
    # stage held less than its observation period, or without an on-time repayment: wait
    _, d = step(acc, obs(paid(45, "i2"), outcome=ontime("i2")))
    assert d.reasons == ("STAGE_PERIOD_NOT_MET",)
    # what was drawn inside the stage counts, not the balance owed before it
    _, d = step(acc, obs(paid(62, "i3"), outcome=ontime("i3"), balance=39_000))
    assert d.reasons == ("UTILIZATION_TOO_HIGH",)
    _, d = step(dataclasses.replace(acc, stage_balance=30_000),
                obs(paid(62, "i3"), outcome=ontime("i3"), balance=39_000))
    assert d.action is Action.PROMOTE
    acc, d = step(acc, obs(paid(62, "i3"), outcome=ontime("i3")))
    assert (d.action, acc.stage, acc.limit) == (Action.PROMOTE, 2, 100_000)
    assert acc.ontime_in_stage == 0 and acc.status_since_ts == at(62)
    acc, d = step(acc, obs(paid(93, "i4"), outcome=ontime("i4")))
    assert (d.action, acc.stage, acc.limit) == (Action.PROMOTE, 3, 200_000)
    acc, d = step(acc, obs(paid(110, "i5"), outcome=ontime("i5")))
    assert d.reasons == ("STAGE_PERIOD_NOT_MET",)
    acc, d = step(acc, obs(paid(124, "i6"), outcome=ontime("i6")))
    assert (d.action, acc.status, acc.stage, acc.limit) == (Action.RESTORE, Status.ACTIVE, 0,
                                                            400_000)
    assert d.reasons[0] == "LADDER_COMPLETE" and acc.pre_suspension_limit == 0


def test_ladder_rungs_are_clamped_to_the_income_cap() -> None:
    acc, _ = step(suspended(0, base=4_000_000), obs(paid(31), income_monthly=300_000))
    assert acc.limit == 400_000  # 10 % of 40,000.00 = 4,000.00 <= 3 x 3,000.00
    acc, d = step(acc, obs(paid(32, "i2"), outcome=ontime("i2"), income_monthly=100_000))
    assert (d.action, d.reasons, acc.limit, acc.stage) == (Action.CUT, ("INCOME_CAP",), 300_000, 1)


@pytest.mark.parametrize(("kw", "reason"), [
    ({"outcome": late("i9", 3)}, "LATE_IN_PROBATION"),
    ({"outcome": Outcome("i9", "paid_in_full", 2, 10_000, T0)}, "LATE_IN_PROBATION"),
    ({"pd": 0.5, "overdue_amount": 10_000, "max_dpd_90d": 5}, "VERY_HIGH_RISK_SCORE"),
])
def test_lateness_or_a_risk_spike_in_probation_relapses(kw: dict[str, Any], reason: str) -> None:
    acc, _ = step(suspended(0), obs(paid(31)))
    acc, _ = step(acc, obs(paid(62, "i2"), outcome=ontime("i2")))
    assert acc.stage == 2
    new, d = step(acc, obs(paid(70, "i9"), **kw))
    assert (d.action, d.reasons[0]) == (Action.RELAPSE, reason)
    assert (new.status, new.limit, new.stage, new.pre_suspension_limit) == (
        Status.SUSPENDED, 0, 0, 400_000)
    assert new.status_since_ts == at(70)  # the suspension period starts again


def test_freeze_keeps_the_limit_blocks_raises_and_unfreeze_returns() -> None:
    acc = account(0)
    acc, d = step(acc, obs(cmd(100, "freeze")))
    assert (d.action, acc.status, acc.limit, acc.frozen_from) == (
        Action.FREEZE, Status.FROZEN, 300_000, Status.ACTIVE)
    acc, d = step(acc, obs(paid(200), **GOOD))  # would be a raise if ACTIVE
    assert (d.action, d.reasons) == (Action.HOLD, ("ACCOUNT_FROZEN",))
    _, d = step(acc, obs(cmd(201, "freeze")))
    assert d.reasons == ("ALREADY_FROZEN",)
    with pytest.raises(CommandRejected) as info:
        decide(acc, obs(cmd(201, "set_limit", new_limit=1_000)), POLICY)
    assert (info.value.code, info.value.field) == ("account_frozen", "kind")
    acc, d = step(acc, obs(cmd(202, "unfreeze")))
    assert (d.action, acc.status, acc.limit, acc.frozen_from) == (
        Action.UNFREEZE, Status.ACTIVE, 300_000, None)
    _, d = step(acc, obs(cmd(203, "unfreeze")))
    assert d.reasons == ("NOT_FROZEN",)
    _, d = step(acc, obs(paid(210), **GOOD))
    assert d.reasons == ("RECENT_LIMIT_CHANGE",)  # an unfreeze is a status change


def test_freeze_in_probation_keeps_the_stage_and_restarts_its_clock() -> None:
    acc, _ = step(suspended(0), obs(paid(31)))
    acc, _ = step(acc, obs(cmd(40, "freeze")))
    assert (acc.status, acc.stage, acc.limit) == (Status.FROZEN, 1, 40_000)
    acc, _ = step(acc, obs(paid(50, "i2"), outcome=ontime("i2")))
    acc, d = step(acc, obs(cmd(80, "unfreeze")))
    assert (acc.status, acc.stage, acc.status_since_ts) == (Status.PROBATION, 1, at(80))
    _, d = step(acc, obs(paid(95, "i3")))
    assert d.reasons == ("STAGE_PERIOD_NOT_MET",)


def test_lateness_while_frozen_is_judged_at_the_unfreeze() -> None:
    acc, _ = step(account(0), obs(cmd(100, "freeze")))
    acc, d = step(acc, obs(overdue(110, "i2"), outcome=late("i2"), late_count_12=2))
    assert d.action is Action.HOLD
    new, ds = decide(acc, obs(cmd(120, "unfreeze"), late_count_12=2), POLICY)
    assert [d.action for d in ds] == [Action.UNFREEZE, Action.SUSPEND]
    assert (ds[1].old_status, ds[1].new_status) == (Status.ACTIVE, Status.SUSPENDED)
    assert (new.status, new.pre_suspension_limit) == (Status.SUSPENDED, 300_000)


def test_operator_set_limit_within_bounds_and_rejections() -> None:
    acc, d = step(account(0), obs(cmd(10, "set_limit", new_limit=1_234_567)))
    assert (d.action, acc.limit, d.reasons) == (Action.SET_LIMIT, 1_234_567,
                                                ("OPERATOR_SET_LIMIT",))
    with pytest.raises(CommandRejected) as info:
        decide(acc, obs(cmd(11, "set_limit", new_limit=5_000_001)), POLICY)
    assert (info.value.code, info.value.field) == ("limit_out_of_bounds", "new_limit")
    with pytest.raises(CommandRejected) as info:
        decide(acc, obs(cmd(11, "set_limit", new_limit=900_000), income_monthly=100_000), POLICY)
    assert info.value.code == "limit_out_of_bounds" and "income cap" in str(info.value)
    with pytest.raises(CommandRejected) as info:
        decide(acc, obs(cmd(11, "freeze", operator="mallory")), POLICY)
    assert (info.value.code, info.value.field) == ("unknown_operator", "operator")
    assert isinstance(info.value, ValueError)


def test_override_above_the_cap_when_the_policy_allows_it() -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8").replace(
        "allow_override_above_max = false", "allow_override_above_max = true")
    policy = parse_policy(text)
    acc, d = step(account(0), obs(cmd(10, "set_limit", new_limit=8_000_000)), policy)
    assert acc.limit_override and d.reasons == ("OPERATOR_OVERRIDE_ABOVE_CAP",
                                                "OPERATOR_SET_LIMIT")
    acc, d = step(acc, obs(paid(200), **GOOD), policy)  # the override stands: no clamp
    assert (d.action, acc.limit) == (Action.HOLD, 8_000_000)
    assert d.reasons[0] == "OPERATOR_OVERRIDE_ACTIVE"
    acc, d = step(acc, obs(tx(201), pd=0.2, ontime_count_12=6), policy)  # a risk cut ends it
    assert (d.action, acc.limit, acc.limit_override) == (Action.CUT, 5_000_000, False)
    assert d.reasons == ("MAX_LIMIT_CAP", "HIGH_RISK_SCORE")


def test_set_limit_while_suspended_sets_what_the_ladder_restores() -> None:
    acc, d = step(suspended(0), obs(cmd(5, "set_limit", new_limit=250_000)))
    assert (d.action, acc.limit, acc.pre_suspension_limit) == (Action.SET_LIMIT, 0, 250_000)
    acc, _ = step(acc, obs(paid(31)))
    assert acc.limit == 25_000
    acc, d = step(acc, obs(cmd(32, "set_limit", new_limit=500_000)))
    assert (acc.stage, acc.limit, acc.pre_suspension_limit) == (1, 50_000, 500_000)


def test_opened_sets_the_initial_limit_within_the_caps() -> None:
    acc = new_account(POLICY, at(0))
    assert (acc.status, acc.limit) == (Status.ACTIVE, POLICY.limits.default_limit)
    new, d = step(acc, obs(opened(0.1, 800_000, income=100_000)))
    assert (d.action, new.limit, d.reasons) == (Action.OPEN, 300_000,
                                                ("ACCOUNT_OPENED", "INCOME_CAP"))
    assert new.opened_ts == at(0.1)
    new, d = step(acc, obs(opened(0.1, 9_000_000)))
    assert (new.limit, d.reasons) == (5_000_000, ("ACCOUNT_OPENED", "MAX_LIMIT_CAP"))
    new, d = step(acc, obs(opened(0.1, 120_000)))
    assert (new.limit, d.reasons) == (120_000, ("ACCOUNT_OPENED",))


def test_closed_is_terminal() -> None:
    acc, d = step(account(0), obs(AccountClosed(_eid(), "u1", at(50))))
    assert (d.action, acc.status, acc.limit) == (Action.CLOSE, Status.CLOSED, 0)
    for ev in (paid(60), opened(61, 100_000), AccountClosed(_eid(), "u1", at(62))):
        acc2, d = step(acc, obs(ev, **GOOD))
        assert acc2.status is Status.CLOSED and d.reasons == ("ACCOUNT_CLOSED",)
    for kind in ("freeze", "unfreeze", "set_limit"):
        with pytest.raises(CommandRejected) as info:
            decide(acc, obs(cmd(70, kind)), POLICY)
        assert info.value.code == "account_closed"


def test_frozen_accounts_can_be_closed() -> None:
    acc, _ = step(account(0), obs(cmd(1, "freeze")))
    acc, d = step(acc, obs(AccountClosed(_eid(), "u1", at(2))))
    assert d.action is Action.CLOSE
    assert (acc.status, acc.frozen_from, acc.limit) == (Status.CLOSED, None, 0)


def test_rules_fallback_reason_is_on_every_decision() -> None:
    _, d = step(account(0), obs(paid(100), fallback="MODEL_COLD", **GOOD))
    assert d.action is Action.RAISE and d.reasons[-1] == "MODEL_COLD" and len(d.reasons) == 4
    _, d = step(account(0), obs(cmd(1, "freeze"), fallback="MODEL_DRIFT"))
    assert d.reasons == ("OPERATOR_FREEZE", "MODEL_DRIFT")
    _, d = step(account(0), obs(tx(100), pd=0.4, fallback="SOMETHING_NEW", ontime_count_12=6))
    assert d.reasons == ("HIGH_RISK_SCORE", "MODEL_FALLBACK")
    # a model score with a stray fallback_reason is not a fallback
    o = obs(tx(100), pd=0.4, ontime_count_12=6)
    o = dataclasses.replace(o, risk=dataclasses.replace(o.risk, fallback_reason="MODEL_COLD"))
    assert step(account(0), o)[1].reasons == ("HIGH_RISK_SCORE",)


def test_many_reasons_are_cut_to_four_most_important_first() -> None:
    _, d = step(account(0), obs(paid(10), pd=0.08, overdue_amount=1, late_count_12=3,
                                ontime_count_12=0))
    assert d.reasons == ("ARREARS_OUTSTANDING", "RECENT_LATE_PAYMENT",
                         "RISK_TOO_HIGH_FOR_INCREASE", "FEW_ONTIME_PAYMENTS")


def test_an_unusable_score_moves_nothing() -> None:
    _, d = step(account(0), obs(paid(100), pd=math.nan, **GOOD))
    assert (d.action, d.reasons, d.risk_pd) == (Action.HOLD, ("RISK_SCORE_UNAVAILABLE",), 1.0)
    _, d = step(suspended(0), obs(paid(40), pd=math.inf))
    assert d.reasons == ("ACCOUNT_SUSPENDED", "RISK_SCORE_UNAVAILABLE")


def test_broken_features_read_as_neutral() -> None:
    o = obs(paid(100), **GOOD)
    x = dict(o.features)
    x["inflow_trend"] = math.nan
    x["late_count_12"] = -3
    del x["utilization"]
    _, d = step(account(0), dataclasses.replace(o, features=x))
    assert d.action is Action.RAISE  # utilization_peak_30d still shows the demand


def test_an_old_event_cannot_reopen_a_cooldown() -> None:
    acc, d = step(account(0), obs(paid(100), **GOOD))
    assert d.action is Action.RAISE
    # an event stamped long ago, arriving now, is judged at the account's clock (day 100)
    _, d = step(acc, obs(paid(10, "i2"), **GOOD))
    assert d.reasons == ("RECENT_LIMIT_CHANGE",)


def test_is_decision_point() -> None:
    acc = account(0)
    assert not is_decision_point(acc, tx(10), None, POLICY)
    assert not is_decision_point(acc, tx(10), 0.49, POLICY)
    assert not is_decision_point(acc, tx(10), math.nan, POLICY)
    assert is_decision_point(acc, tx(10), 0.5, POLICY)
    # the cheap per-transaction checks, given the features after the transaction
    f = new_state()
    f.balance = 250_000  # 300,000 limit: this spend of 50,000 crosses 80 % utilization
    assert is_decision_point(acc, tx(10, 50_000), None, POLICY, f)
    f.balance = 260_000  # already above before it: not a crossing
    assert not is_decision_point(acc, tx(10, 10_000), None, POLICY, f)
    cash = Transaction(_eid(), "u1", at(10), "cash_advance", 1_000, "CNY", "6011")
    assert is_decision_point(acc, cash, None, POLICY, new_state())
    f = new_state()
    f.burst = {at(10) // 60_000: 12_000}  # the last hour's anomaly scores sum to 1.2
    assert is_decision_point(acc, tx(10), None, POLICY, f)
    assert is_decision_point(acc, tx(30), None, POLICY)  # review due
    for ev in (paid(1), overdue(1), InstallmentDue(_eid(), "u1", at(1), "i", 1, at(9), "CNY"),
               opened(1, 5), cmd(1, "freeze"), AccountClosed(_eid(), "u1", at(1))):
        assert is_decision_point(acc, ev, None, POLICY)
    acc, _ = step(acc, obs(tx(30)))
    assert acc.last_review_ts == at(30)
    assert not is_decision_point(acc, tx(40), None, POLICY)
    # The first transaction after a probation stage's observation period (30 days) is one.
    rung = dataclasses.replace(acc, status=Status.PROBATION, stage=1, status_since_ts=at(30),
                               last_review_ts=at(50))  # no review due before day 80
    assert not is_decision_point(rung, tx(55), None, POLICY)
    assert is_decision_point(rung, tx(60), None, POLICY)
    assert not is_decision_point(dataclasses.replace(rung, last_review_ts=at(60)), tx(61),
                                 None, POLICY)


def test_decisions_are_deterministic_and_json_able() -> None:
    o = obs(paid(100), outcome=ontime(), **GOOD)
    a = decide(account(0), o, POLICY)
    assert a == decide(account(0), o, POLICY)
    d = a[1][0].to_dict()
    assert orjson.loads(orjson.dumps(d)) == d
    assert d["action"] == "RAISE" and d["top_features"] == [list(c) for c in CONTRIB]
