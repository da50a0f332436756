"""Random event streams through the whole engine (features, decision points, policy): the
invariants of DESIGN §3.5 and the adverse-action guardrails hold on what the features really
compute, not only on hand-drawn feature vectors (tests/property/test_policy_invariants.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FeatureConfig
from features.windows import DAY_MS, MINUTE_MS
from policies.account import Status
from policies.engine import DECISIONS, Engine, Source, UserState
from policies.reasons import MAX_REASONS, REGISTRY
from policies.spec import load_policy
from streams.records import (
    AccountOpened,
    InputEvent,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    Transaction,
)
from streams.settings import DEFAULT_POLICY

POLICY = load_policy(DEFAULT_POLICY)
T0 = 1_767_225_600_000
#: The reasons a suspension may give: delinquency, never a score or an anomaly alone.
DELINQUENCY = {"SEVERE_DELINQUENCY", "MISSED_REPAYMENTS", "LATE_IN_PROBATION",
               "VERY_HIGH_RISK_SCORE"}

_spend = st.tuples(
    st.just("spend"),
    st.integers(0, 3 * DAY_MS),  # time to the next event
    st.sampled_from(["purchase", "purchase", "purchase", "cash_advance", "refund"]),
    st.sampled_from([1_000, 8_000, 30_000, 200_000, 900_000]),
    st.sampled_from(["5411", "5812", "5944", "4829", "7995"]),
    st.sampled_from(["CN", "CN", "CN", "US", "NG"]),
)
#: A burst: many spends minutes apart.
_burst = st.tuples(st.just("burst"), st.integers(3, 12), st.sampled_from([50_000, 150_000]))
_repay = st.tuples(
    st.just("repay"),
    st.integers(0, 10 * DAY_MS),
    st.sampled_from(["due", "paid", "overdue"]),
    st.integers(1, 4),  # installment number
    st.sampled_from([1, 5, 10, 30, 60]),
)
_inflow = st.tuples(st.just("inflow"), st.integers(0, 5 * DAY_MS),
                    st.sampled_from([100_000, 1_000_000]))
streams = st.lists(st.one_of(_spend, _spend, _burst, _repay, _repay, _inflow), max_size=60)


def _events(ops: list[tuple[Any, ...]]) -> list[InputEvent]:
    ts = T0
    n = 0
    out: list[InputEvent] = [AccountOpened("e0", "u", T0, 1_000_000, "CNY", 1_500_000)]

    def eid() -> str:
        nonlocal n
        n += 1
        return f"e{n}"

    for op in ops:
        if op[0] == "spend":
            _, gap, kind, amount, mcc, country = op
            ts += gap
            out.append(Transaction(eid(), "u", ts, kind, amount, "CNY", mcc, country))
        elif op[0] == "burst":
            _, count, amount = op
            for _ in range(count):
                ts += 4 * MINUTE_MS
                out.append(Transaction(eid(), "u", ts, "purchase", amount, "CNY", "5944", "NG"))
        elif op[0] == "inflow":
            ts += op[1]
            out.append(Transaction(eid(), "u", ts, "inflow", op[2], "CNY"))
        else:
            _, gap, kind, k, dpd = op
            ts += gap
            inst = f"i{k}"
            if kind == "due":
                out.append(InstallmentDue(eid(), "u", ts, inst, 50_000, ts + 20 * DAY_MS, "CNY"))
            elif kind == "paid":
                out.append(InstallmentPaid(eid(), "u", ts, inst, 50_000, "CNY"))
            else:
                out.append(InstallmentOverdue(eid(), "u", ts, inst, dpd))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=streams)
def test_guardrails_hold_on_random_streams(ops: list[tuple[Any, ...]]) -> None:
    engine = Engine.rules_only(POLICY, FeatureConfig())
    state: UserState | None = None
    overdue_seen = False
    for offset, ev in enumerate(_events(ops)):
        overdue_seen |= isinstance(ev, InstallmentOverdue)
        r = engine.step(state, ev, Source("in", 0, offset))
        state = r.state
        acc = state.account
        assert 0 <= acc.limit <= POLICY.limits.max_limit
        if acc.status is Status.HOLD_FOR_REVIEW:
            assert state.view()["available_credit"] == 0  # the line is held
        for d in r.decisions:
            assert 1 <= len(d.reasons) <= MAX_REASONS
            assert all(c in REGISTRY for c in d.reasons)
            if d.action.value in ("SUSPEND", "RELAPSE"):
                # a suspension needs delinquency: an overdue notice was seen
                assert overdue_seen
                causes = {c for c in d.reasons if REGISTRY[c].kind != "model"}
                assert causes <= DELINQUENCY
            if d.action.value in ("CUT", "SUSPEND", "RELAPSE", "HOLD_LINE"):
                shown = {n for n, _ in d.top_features}
                assert not shown & set(POLICY.guardrails.non_actionable)
            if d.action.value == "RAISE":
                step = min(d.old_limit * POLICY.increase.max_step_pct // 100,
                           POLICY.increase.max_step_abs)
                assert 0 < d.new_limit - d.old_limit <= step
        for o in r.outputs:
            if o.topic == DECISIONS:
                assert o.value["policy_version"] == POLICY.version and o.value["model_version"]
