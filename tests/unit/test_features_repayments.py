"""Installments, outcomes, repayment features, income, utilization."""

from __future__ import annotations

import pytest

from features import (
    FeatureConfig,
    FeatureState,
    Outcome,
    new_state,
    observe_limit,
    update,
    vector,
)
from features.installments import MAX_OPEN, RESOLVED_KEPT
from features.state import I_PAID
from features.vector import RATIO_CAP
from features.windows import DAY_MS, HOUR_MS
from streams.records import (
    AccountOpened,
    IncomeReported,
    InputEvent,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    LiabilitiesReported,
    LimitCommand,
    Transaction,
)

T0 = 1_767_225_600_000
LIMIT = 10_000
CFG = FeatureConfig()


def due(ts: int, inst: str, amount: int, due_ts: int) -> InstallmentDue:
    return InstallmentDue(f"d-{inst}-{ts}", "u1", ts, inst, amount, due_ts, "CNY")


def paid(ts: int, inst: str, amount: int) -> InstallmentPaid:
    return InstallmentPaid(f"p-{inst}-{ts}", "u1", ts, inst, amount, "CNY")


def overdue(ts: int, inst: str, dpd: int) -> InstallmentOverdue:
    return InstallmentOverdue(f"o-{inst}-{ts}", "u1", ts, inst, dpd)


def buy(ts: int, amount: int) -> Transaction:
    return Transaction(f"t-{ts}", "u1", ts, "purchase", amount, "CNY", "5411", "")


def run(events: list[InputEvent], state: FeatureState | None = None,
        limit: int = LIMIT) -> tuple[FeatureState, list[Outcome]]:
    s = state if state is not None else new_state()
    outcomes = []
    for ev in events:
        u = update(s, ev, limit, CFG)
        s = u.state
        if u.outcome is not None:
            outcomes.append(u.outcome)
    return s, outcomes


def test_paid_on_time_in_two_parts() -> None:
    due_ts = T0 + 10 * DAY_MS
    s, outs = run([buy(T0, 1_000), due(T0, "i1", 1_000, due_ts), paid(T0 + 5 * DAY_MS, "i1", 400)])
    assert outs == []
    s, outs = run([paid(due_ts - 1, "i1", 600)], s)
    assert outs == [Outcome("i1", "paid_in_full", 0, 1_000, due_ts)]
    v = vector(s, T0 + 19 * DAY_MS + HOUR_MS, LIMIT)
    assert (v["ontime_count_12"], v["late_count_12"]) == (1, 0)
    assert (v["days_since_ontime"], v["days_since_missed"]) == (9, 365)  # 9 d 1 h: floored
    assert (v["paid_due_ratio_3"], v["overdue_amount"], v["balance"]) == (1.0, 0, 0)


def test_paid_in_full_late_floors_days() -> None:
    due_ts = T0 + 10 * DAY_MS
    s, outs = run([due(T0, "i1", 1_000, due_ts), paid(due_ts + 2 * DAY_MS + 12 * HOUR_MS, "i1",
                                                       1_500)])
    assert outs == [Outcome("i1", "paid_in_full", 2, 1_000, due_ts)]
    v = vector(s, due_ts + 3 * DAY_MS, LIMIT)
    assert (v["ontime_count_12"], v["late_count_12"], v["max_dpd_90d"]) == (0, 1, 2)
    assert (v["days_since_missed"], v["days_since_ontime"]) == (0, 365)


def test_overdue_outcome_only_when_lateness_rises() -> None:
    due_ts = T0 + 10 * DAY_MS
    s, outs = run([due(T0, "i1", 1_000, due_ts), overdue(due_ts + 5 * DAY_MS, "i1", 5),
                   overdue(due_ts + 6 * DAY_MS, "i1", 3), overdue(due_ts + 30 * DAY_MS, "i1", 30)])
    assert outs == [Outcome("i1", "overdue", 5, 1_000, due_ts),
                    Outcome("i1", "overdue", 30, 1_000, due_ts)]
    v = vector(s, due_ts + 31 * DAY_MS, LIMIT)
    assert (v["late_count_12"], v["max_dpd_90d"], v["overdue_amount"]) == (1, 30, 1_000)
    s, outs = run([paid(due_ts + 40 * DAY_MS, "i1", 1_000)], s)
    assert outs == [Outcome("i1", "paid_in_full", 40, 1_000, due_ts)]
    v = vector(s, due_ts + 41 * DAY_MS, LIMIT)
    assert (v["ontime_count_12"], v["late_count_12"], v["overdue_amount"]) == (0, 1, 0)
    assert v["max_dpd_90d"] == 40
    # 90 days on, the lateness has left the window.
    assert vector(s, due_ts + 131 * DAY_MS, LIMIT)["max_dpd_90d"] == 0


def test_unknown_installment_events() -> None:
    s, outs = run([buy(T0, 3_000), paid(T0 + DAY_MS, "ghost", 1_000),
                   overdue(T0 + 2 * DAY_MS, "ghost", 7)])
    assert outs == []
    assert s.balance == 2_000
    assert s.installments == {}
    v = vector(s, T0 + 2 * DAY_MS, LIMIT)
    assert (v["max_dpd_90d"], v["days_since_missed"], v["late_count_12"]) == (7, 0, 0)


def test_paid_due_ratio_of_last_three_due() -> None:
    now = T0 + 100 * DAY_MS
    events: list[InputEvent] = []
    for i, pay in enumerate((1_000, 1_000, 500, 0)):  # oldest due first
        events += [due(T0, f"i{i}", 1_000, T0 + (i + 1) * 10 * DAY_MS)]
        if pay:
            events.append(paid(T0 + i * 10 * DAY_MS, f"i{i}", pay))
    events.append(due(T0, "future", 5_000, now + DAY_MS))  # not yet due: left out
    s, _ = run(events)
    v = vector(s, now, LIMIT)
    assert v["paid_due_ratio_3"] == pytest.approx(1_500 / 3_000)
    assert v["overdue_amount"] == 500 + 1_000


def test_payment_behaviour_tells_minimum_payers_from_transactors() -> None:
    now = T0 + 100 * DAY_MS
    events: list[InputEvent] = []
    # Oldest first: a full balance cleared (1 000 due, 8 000 paid), then three statements of
    # a growing balance paid exactly the minimum, the last one not yet paid (short by all).
    for i, (amount, pay) in enumerate(((1_000, 8_000), (1_000, 1_000), (2_000, 2_000),
                                       (3_000, 0))):
        events.append(due(T0, f"i{i}", amount, T0 + (i + 1) * 10 * DAY_MS))
        if pay:
            events.append(paid(T0 + i * 10 * DAY_MS, f"i{i}", pay))
    s, _ = run(events)
    v = vector(s, now, LIMIT)
    # The 3 latest due: 1 000 / 1 000 and 2 000 / 2 000 at the minimum, 0 / 3 000.
    assert v["payment_ratio_3"] == pytest.approx(3_000 / 6_000)
    assert v["min_payments_3"] == 2
    assert v["amount_due_trend"] == 3.0  # 3 000 now vs 1 000 three statements before
    # Before the last statement fell due: the cleared balance is among the 3, uncapped.
    v = vector(s, T0 + 35 * DAY_MS, LIMIT)
    assert v["payment_ratio_3"] == pytest.approx(11_000 / 4_000)
    assert v["paid_due_ratio_3"] == 1.0
    # A statement issued but not yet due already moves the trend (it states the balance).
    s, _ = run([due(T0, f"j{i}", 1_000 * (i + 1), T0 + (i + 1) * 10 * DAY_MS) for i in range(4)])
    assert vector(s, T0, LIMIT)["amount_due_trend"] == 4.0
    assert vector(s, T0, LIMIT)["payment_ratio_3"] == 1.0  # none due yet
    # Capped, and 1.0 (flat) without four statements.
    s, _ = run([due(T0, "k0", 1, T0 + DAY_MS), paid(T0, "k0", 50_000),
                due(T0, "k1", 1, T0 + 2 * DAY_MS)])
    v = vector(s, T0 + 3 * DAY_MS, LIMIT)
    assert (v["payment_ratio_3"], v["min_payments_3"], v["amount_due_trend"]) == (RATIO_CAP, 0, 1.0)


def test_overdue_amount_is_strictly_past_due() -> None:
    due_ts = T0 + 10 * DAY_MS
    s, _ = run([due(T0, "i1", 1_000, due_ts), paid(T0 + DAY_MS, "i1", 300)])
    assert vector(s, due_ts, LIMIT)["overdue_amount"] == 0
    assert vector(s, due_ts + 1, LIMIT)["overdue_amount"] == 700


def test_installment_bounds() -> None:
    events: list[InputEvent] = [due(T0, f"o{i}", 100, T0 + (i + 1) * DAY_MS)
                                for i in range(MAX_OPEN + 3)]
    s, _ = run(events)
    assert len(s.installments) == MAX_OPEN
    # The three with the oldest due dates went: their arrears no longer count.
    late = T0 + 20 * DAY_MS
    assert vector(s, late, LIMIT)["overdue_amount"] == 100 * MAX_OPEN
    events = []
    for i in range(20):
        events += [due(T0, f"r{i}", 100, T0 + 200 * DAY_MS),
                   paid(T0 + DAY_MS + i * HOUR_MS, f"r{i}", 100)]
    s, outs = run(events, s)
    assert len(outs) == 20
    closed = [r for r in s.installments.values() if r[I_PAID] >= 100]
    assert len(closed) == RESOLVED_KEPT
    v = vector(s, T0 + 2 * DAY_MS, LIMIT)
    assert (v["ontime_count_12"], v["late_count_12"]) == (12, 0)


def test_income_liabilities_and_dti() -> None:
    now = T0 + 10 * DAY_MS
    s, _ = run([
        AccountOpened("o", "u1", T0, LIMIT, "CNY", declared_income=10_000),
        IncomeReported("i1", "u1", T0 + 5 * DAY_MS, 20_000, "CNY"),
        IncomeReported("i0", "u1", T0 + 2 * DAY_MS, 5_000, "CNY"),  # older report, late
        LiabilitiesReported("l1", "u1", T0 + DAY_MS, 3_000, "CNY"),
        due(T0, "soon", 4_000, now + 10 * DAY_MS),
        due(T0, "later", 9_000, now + 40 * DAY_MS),  # beyond 30 d
        due(T0, "past", 1_000, now - DAY_MS),
    ])
    v = vector(s, now, LIMIT)
    assert (v["income_monthly"], v["liabilities_monthly"]) == (20_000, 3_000)
    # The line's monthly obligation: the mean of the installments due within 30 days (paid or
    # not), so the ratio does not swing between a statement and its payment.
    assert v["debt_to_income"] == pytest.approx((3_000 + (4_000 + 1_000) / 2) / 20_000)
    s, _ = run([paid(now + DAY_MS, "soon", 4_000)], s)
    assert vector(s, now + DAY_MS, LIMIT)["debt_to_income"] == v["debt_to_income"]
    assert v["days_since_open"] == 10
    no_income, _ = run([LiabilitiesReported("l", "u1", T0, 1, "CNY")])
    assert vector(no_income, T0, LIMIT)["debt_to_income"] == RATIO_CAP
    assert vector(new_state(), T0, LIMIT)["debt_to_income"] == 0.0


def test_days_since_open_falls_back_to_first_event() -> None:
    s, _ = run([buy(T0 + 3 * DAY_MS, 10), LimitCommand("c", "u1", T0 + 4 * DAY_MS, "freeze",
                                                       "op", "r")])
    assert vector(s, T0 + 10 * DAY_MS + 5, LIMIT)["days_since_open"] == 7


def test_utilization_and_30d_peak() -> None:
    s, _ = run([buy(T0 + DAY_MS, 6_000), paid(T0 + 2 * DAY_MS, "x", 5_000)])
    v = vector(s, T0 + 3 * DAY_MS, LIMIT)
    assert (v["utilization"], v["utilization_peak_30d"]) == (0.1, 0.6)
    # Day 1 has left the window, but 60 % held on day 2 until the payment.
    assert vector(s, T0 + 31 * DAY_MS, LIMIT)["utilization_peak_30d"] == 0.6
    assert vector(s, T0 + 32 * DAY_MS, LIMIT)["utilization_peak_30d"] == 0.1


def test_observe_limit_keeps_the_peak_under_the_old_limit() -> None:
    s, _ = run([buy(T0 + DAY_MS, 6_000)])
    s = observe_limit(s, 60_000, T0 + 10 * DAY_MS)
    assert vector(s, T0 + 35 * DAY_MS, 60_000)["utilization_peak_30d"] == 0.6
    v = vector(s, T0 + 41 * DAY_MS, 60_000)
    assert (v["utilization"], v["utilization_peak_30d"]) == (0.1, 0.1)
    cut = observe_limit(run([buy(T0, 1_000)])[0], 2_000, T0 + HOUR_MS)  # a cut raises the peak
    assert vector(cut, T0 + DAY_MS, 2_000)["utilization_peak_30d"] == 0.5


def test_zero_limit() -> None:
    s, _ = run([buy(T0, 10)], limit=0)
    assert vector(s, T0, 0)["utilization"] == RATIO_CAP
    assert vector(new_state(), T0, 0)["utilization"] == 0.0
