"""DESIGN §3.5 for every input sequence: a stateful hypothesis test drives the pure policy with
arbitrary observations (random features, scores, outcomes, account events and operator
commands, time jumping forward and sometimes backward) and checks every invariant after every
step, for every policy shipped and a variant that allows operator overrides."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import orjson
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from features.outcome import Outcome
from features.windows import DAY_MS
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
    rule_risk,
)
from policies.reasons import MAX_REASONS, REGISTRY
from streams.records import (
    AccountClosed,
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
from streams.settings import DEFAULT_POLICY

T0 = 1_767_225_600_000
TEXT = DEFAULT_POLICY.read_text(encoding="utf-8")
DEFAULT = parse_policy(TEXT)
#: Short clocks, a two-stage ladder and operator overrides: more of the machine per example.
VARIANT = parse_policy(
    TEXT.replace("allow_override_above_max = false", "allow_override_above_max = true")
    .replace("ladder = [10, 25, 50, 100]", "ladder = [25, 60, 100]")
    .replace("observation_days = [30, 30, 30]", "observation_days = [7, 14]")
    .replace("min_suspension_days = 30", "min_suspension_days = 10")
    .replace("min_days_since_open = 90", "min_days_since_open = 0")
)

UP = {Action.RAISE, Action.REINSTATE, Action.PROMOTE, Action.RESTORE, Action.OPEN,
      Action.SET_LIMIT}
LADDER = {Action.REINSTATE, Action.PROMOTE, Action.RESTORE}
ADVERSE = {Action.CUT, Action.SUSPEND, Action.RELAPSE, Action.HOLD_LINE}
DOWN = {Action.CUT, Action.SUSPEND, Action.RELAPSE, Action.CLOSE, Action.SET_LIMIT,
        Action.OPEN, Action.FREEZE, Action.HOLD_LINE}

probability = st.floats(0.0, 1.0, allow_nan=False)
good_features = st.fixed_dictionaries({
    "ontime_count_12": st.integers(3, 12).map(float),
    "late_count_12": st.just(0.0),
    "utilization": st.floats(0.0, 0.9),
    "utilization_peak_30d": st.floats(0.6, 1.2),
    "debt_to_income": st.floats(0.0, 0.4),
    "inflow_trend": st.floats(0.9, 2.0),
    "overdue_amount": st.just(0.0),
})
any_features = st.fixed_dictionaries({
    "ontime_count_12": st.integers(0, 12).map(float),
    "late_count_12": st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0, 6.0]),
    "max_dpd_90d": st.sampled_from([0.0, 0.0, 0.0, 3.0, 29.0, 30.0, 90.0]),
    "utilization": st.floats(0.0, 1.5),
    "utilization_peak_30d": st.floats(0.0, 1.5),
    "debt_to_income": st.floats(0.0, 2.0),
    "inflow_trend": st.floats(0.0, 3.0),
    "overdue_amount": st.sampled_from([0.0, 0.0, 0.0, 1.0, 50_000.0]),
    "paid_due_ratio_3": st.floats(0.0, 1.0),
    "spend_velocity_24h": st.floats(0.0, 20.0),
    "anomaly_score": probability,
    "anomaly_burst_1h": st.sampled_from([0.0, 0.0, 0.0, 0.6, 1.3, 3.0]),
    "spend_sum_24h": st.sampled_from([0.0, 0.0, 10_000.0, 2_000_000.0]),
    "cash_advance_share_30d": st.sampled_from([0.0, 0.0, 0.2, 0.6]),
    "balance": st.sampled_from([0.0, 10_000.0, 150_000.0, 900_000.0]),
    "refund_ratio_30d": st.sampled_from([0.0, 0.0, 0.5]),
})
#: Mostly scores around the thresholds (one_of weighs its branches equally), some anything;
#: None: the rule score of the drawn features.
_near = st.sampled_from([0.005, 0.02, 0.04, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.35, 0.6, None])
scores = st.one_of(_near, _near, _near, probability, st.just(math.nan))
fallbacks = st.sampled_from(["", "", "MODEL_COLD", "MODEL_BELOW_FLOOR", "MODEL_DRIFT", "NEW"])
_ontime = st.builds(lambda: Outcome("i", "paid_in_full", 0, 10_000, T0))
outcomes = st.one_of(
    st.none(), _ontime, _ontime, _ontime,
    st.integers(1, 90).map(lambda d: Outcome("i", "paid_in_full", d, 10_000, T0)),
    st.integers(1, 120).map(lambda d: Outcome("i", "overdue", d, 10_000, T0)),
)
money = st.one_of(st.integers(0, 7_000_000), st.sampled_from([0, 50_000, 5_000_000, 5_000_001]))
#: Monthly incomes; the small ones put the income cap below the default limit.
incomes = st.sampled_from([0, 0, 20_000, 50_000, 60_000, 150_000, 400_000, 3_000_000])


class PolicyMachine(RuleBasedStateMachine):
    policy: ClassVar[Policy] = DEFAULT

    def __init__(self) -> None:
        super().__init__()
        self.ts = T0
        self.n = 0
        self.acc: Account = new_account(self.policy, T0)
        # The world the features describe: income only changes with the events that report it.
        self.income = 0
        self.ever_closed = False
        self.checked_cap = True

    # -- drivers -----------------------------------------------------------------------------

    def _eid(self) -> str:
        self.n += 1
        return f"e{self.n}"

    def _apply(self, ev: InputEvent, x: dict[str, float], pd: float | None, fallback: str,
               outcome: Outcome | None = None, anomaly: float | None = None) -> None:
        features = neutral_features(**x, income_monthly=float(self.income))
        base = rule_risk(features, self.policy)
        risk = Risk(base.pd if pd is None else pd, "rules" if fallback else "model",
                    base.model_version, fallback, base.contributions)
        o = Observation(ev, features, risk, outcome, anomaly)
        before = self.acc
        try:
            after, decisions = decide(before, o, self.policy)
        except CommandRejected as exc:
            assert isinstance(ev, LimitCommand)
            assert exc.code in ("unknown_operator", "limit_out_of_bounds", "account_closed",
                                "account_frozen")
            self._check_rejection(before, ev, exc)
            return
        assert decide(before, o, self.policy) == (after, decisions)  # deterministic
        self._check_step(before, after, decisions, o)
        self.acc = after
        self.ever_closed |= after.status is Status.CLOSED

    @initialize(initial=money, income=incomes, opened=st.booleans())
    def first_seen(self, initial: int, income: int, opened: bool) -> None:
        # A user is first seen by a transaction (new_account) or by the opening itself.
        if opened:
            self.opened(initial, income, {}, 0.02)

    @rule(days=st.integers(0, 40), ms=st.integers(0, DAY_MS - 1))
    def time_passes(self, days: int, ms: int) -> None:
        self.ts += days * DAY_MS + ms

    @rule(back=st.integers(1, 20 * DAY_MS))
    def a_late_arrival(self, back: int) -> None:
        # Per-user partition order is not event-time order: the next event may be older.
        self.ts = max(T0, self.ts - back)

    @rule(x=any_features, pd=scores, fb=fallbacks,
          anomaly=st.one_of(st.none(), probability, st.just(math.nan)))
    def transaction(self, x: dict[str, float], pd: float | None, fb: str,
                    anomaly: float | None) -> None:
        ev = Transaction(self._eid(), "u", self.ts, "purchase", 1_000, "CNY")
        if is_decision_point(self.acc, ev, anomaly, self.policy):
            self._apply(ev, x, pd, fb, None, anomaly)
        else:
            # Only a transaction inside the review interval with an unremarkable score skips.
            assert self.ts < self.acc.last_review_ts + self.policy.review.interval_days * DAY_MS
            assert anomaly is None or not anomaly >= self.policy.anomaly.trigger

    @rule(x=st.one_of(good_features, any_features), pd=scores, fb=fallbacks, outcome=outcomes,
          kind=st.sampled_from(["due", "paid", "overdue"]))
    def repayment(self, x: dict[str, float], pd: float | None, fb: str,
                  outcome: Outcome | None, kind: str) -> None:
        ev: InputEvent
        if kind == "due":
            ev = InstallmentDue(self._eid(), "u", self.ts, "i", 10_000, self.ts + 30 * DAY_MS,
                                "CNY")
            outcome = None
        elif kind == "paid":
            ev = InstallmentPaid(self._eid(), "u", self.ts, "i", 10_000, "CNY")
        else:
            ev = InstallmentOverdue(self._eid(), "u", self.ts, "i", 5)
        assert is_decision_point(self.acc, ev, None, self.policy)
        self._apply(ev, x, pd, fb, outcome)

    @rule(x=good_features, pd=st.sampled_from([0.005, 0.02, 0.04]), months=st.integers(1, 4))
    def good_months(self, x: dict[str, float], pd: float, months: int) -> None:
        """On time, low risk, month after month: what lets the ladder and the raises happen."""
        for _ in range(months):
            self.ts += 31 * DAY_MS
            ev = InstallmentPaid(self._eid(), "u", self.ts, "i", 10_000, "CNY")
            self._apply(ev, x, pd, "", Outcome("i", "paid_in_full", 0, 10_000, T0))

    @rule(initial=money, income=incomes, x=any_features, pd=scores)
    def opened(self, initial: int, income: int, x: dict[str, float], pd: float | None) -> None:
        if income:
            self.income = income
        self._apply(AccountOpened(self._eid(), "u", self.ts, initial, "CNY", income), x, pd, "")

    @rule(income=incomes, x=any_features, pd=scores, liabilities=st.booleans())
    def income_or_liabilities(self, income: int, x: dict[str, float], pd: float | None,
                              liabilities: bool) -> None:
        ev: InputEvent
        if liabilities:
            ev = LiabilitiesReported(self._eid(), "u", self.ts, 10_000, "CNY")
        else:
            self.income = income
            ev = IncomeReported(self._eid(), "u", self.ts, income, "CNY")
        self._apply(ev, x, pd, "")

    @rule(dice=st.integers(0, 15))
    def closed(self, dice: int) -> None:
        if dice == 0:  # rare: CLOSED is terminal and would end the exploration
            self._apply(AccountClosed(self._eid(), "u", self.ts), {}, None, "")

    @rule(kind=st.sampled_from(["freeze", "unfreeze", "set_limit"]),
          operator=st.sampled_from(["ops-1", "ops-2", "risk-officer-1", "mallory"]),
          new_limit=money, x=any_features)
    def command(self, kind: Any, operator: str, new_limit: int, x: dict[str, float]) -> None:
        ev = LimitCommand(self._eid(), "u", self.ts, kind, operator, "ticket", new_limit,
                          "CNY" if kind == "set_limit" else "")
        assert is_decision_point(self.acc, ev, None, self.policy)
        self._apply(ev, x, None, "")

    # -- checks ------------------------------------------------------------------------------

    def _ceiling(self) -> int:
        lim = self.policy.limits
        if self.income <= 0:
            return lim.max_limit
        cap = self.income * lim.income_multiple_pct // 100
        return min(lim.max_limit, cap - cap % lim.rounding)

    def _check_rejection(self, acc: Account, ev: LimitCommand, exc: CommandRejected) -> None:
        if exc.code == "unknown_operator":
            assert ev.operator not in self.policy.operators.allowed
        elif exc.code == "account_closed":
            assert acc.status is Status.CLOSED
        elif exc.code == "account_frozen":
            assert acc.status in (Status.FROZEN, Status.HOLD_FOR_REVIEW) and ev.kind == "set_limit"
        else:
            assert ev.new_limit > self._ceiling()
            assert not self.policy.operators.allow_override_above_max

    def _check_step(self, before: Account, after: Account, decisions: list[Decision],
                    o: Observation) -> None:
        now = max(o.event.ts, before.last_review_ts, before.last_change_ts,
                  before.status_since_ts)
        assert 1 <= len(decisions) <= 2
        assert len(decisions) == 1 or decisions[0].action in (Action.UNFREEZE, Action.RELEASE)
        prev = before
        for i, d in enumerate(decisions):
            # each decision takes the account from where the previous one left it
            assert (d.old_limit, d.old_status, d.old_stage) == (prev.limit, prev.status,
                                                                 prev.stage)
            thawed = dataclasses.replace(
                prev, limit=d.new_limit, status=d.new_status, stage=d.new_stage,
                frozen_from=None, hold_until_ts=0)
            if d.action is Action.UNFREEZE:  # a release (of a hold) keeps the clocks
                thawed = dataclasses.replace(thawed, status_since_ts=now, last_change_ts=now)
            nxt = after if i == len(decisions) - 1 else thawed
            assert (d.new_limit, d.new_status, d.new_stage) == (nxt.limit, nxt.status, nxt.stage)
            self._check_decision(prev, nxt, d, o, now)
            prev = nxt
        if prev.status is Status.CLOSED:
            assert after.status is Status.CLOSED
        # clocks never run backwards and never beyond the account's clock
        for name in ("last_change_ts", "last_cut_ts", "status_since_ts", "last_review_ts",
                     "last_late_ts", "last_raise_ts", "last_hold_ts"):
            assert getattr(before, name) <= getattr(after, name) <= max(now, T0), name
        # the cap holds after every decision point (the income is known to this step)
        if not after.limit_override:
            assert after.limit <= self._ceiling()

    def _check_decision(self, prev: Account, new: Account, d: Decision, o: Observation,
                        now: int) -> None:
        p = self.policy
        event(f"{prev.status.value} {d.action.value}")  # --hypothesis-show-statistics
        # §3.6: 1..4 registered reasons, the fallback named, features only if a score drove it
        assert 1 <= len(d.reasons) <= MAX_REASONS
        assert len(set(d.reasons)) == len(d.reasons)
        assert all(r in REGISTRY for r in d.reasons)
        if o.risk.source == "rules" and o.risk.fallback_reason:
            expected = o.risk.fallback_reason if o.risk.fallback_reason in REGISTRY else (
                "MODEL_FALLBACK")
            assert d.reasons[-1] == expected
        driven = any(REGISTRY[r].score_based for r in d.reasons)
        shown = o.risk.contributions if driven else ()
        if d.action in ADVERSE:
            # guardrail: what an adverse action shows the customer, they can act on
            shown = tuple((n, v) for n, v in shown if n not in p.guardrails.non_actionable)
        assert d.top_features == shown
        assert 0.0 <= d.risk_pd <= 1.0
        orjson.dumps(d.to_dict())

        if d.action is Action.HOLD:
            assert (new.limit, new.status, new.stage) == (prev.limit, prev.status, prev.stage)
            assert new.pre_suspension_limit == prev.pre_suspension_limit
        if prev.status is Status.CLOSED:
            assert d.action is Action.HOLD

        # the policy does what it says on the events that must move it
        ev, out = o.event, o.outcome
        automatic = not isinstance(ev, LimitCommand | AccountOpened | AccountClosed)
        if isinstance(ev, AccountClosed):
            assert new.status is Status.CLOSED
        if automatic and prev.status is Status.PROBATION and out is not None and (
                out.kind == "overdue" or out.days_past_due > 0):
            assert d.action is Action.RELAPSE, d
        x = o.features
        arrears = x["overdue_amount"] > 0 and max(
            out.days_past_due if out is not None else 0, x["max_dpd_90d"]) >= p.hold.arrears_dpd
        if automatic and prev.status is Status.ACTIVE and (
                (out is not None and out.days_past_due >= p.suspend.dpd_days)
                or (o.risk.pd >= p.suspend.pd_suspend and arrears)):
            assert d.action is Action.SUSPEND, d
        # guardrail: a suspension needs delinquency (a score alone never suspends); an
        # operator's unfreeze only re-judges a lateness recorded while on hold
        if automatic and d.action in (Action.SUSPEND, Action.RELAPSE):
            late = out is not None and (out.kind == "overdue" or out.days_past_due > 0)
            assert late or x["overdue_amount"] > 0, d
            causes = {r for r in d.reasons if REGISTRY[r].kind != "model"}
            assert not causes - {"SEVERE_DELINQUENCY", "MISSED_REPAYMENTS",
                                 "LATE_IN_PROBATION", "VERY_HIGH_RISK_SCORE"}
        # guardrail: the score cuts only with history beyond the cold start and an actionable
        # main driver
        if d.action is Action.CUT and "HIGH_RISK_SCORE" in d.reasons:
            assert x["ontime_count_12"] + x["late_count_12"] >= (
                p.guardrails.score_cut_min_installments)
            pushing = [(n, c) for n, c in o.risk.contributions if c > 0]
            assert pushing and max(pushing, key=lambda nc: nc[1])[0] not in (
                p.guardrails.non_actionable)
        # no flapping: no slow-evidence cut within the cooldown after a raise without news
        soon = now < prev.last_raise_ts + p.decrease.cooldown_days * DAY_MS
        if d.action is Action.CUT and soon:
            late_now = out is not None and (out.kind == "overdue" or out.days_past_due > 0)
            fresh = (prev.last_late_ts > prev.last_raise_ts or late_now
                     or prev.last_hold_ts > prev.last_raise_ts or x["overdue_amount"] > 0)
            risk = [r for r in d.reasons if REGISTRY[r].kind == "decrease"]
            assert fresh or not risk or set(risk) - {"HIGH_RISK_SCORE", "HIGH_DEBT_TO_INCOME"}
        # the hold: available credit 0 with the limit kept; released to the status under it
        if d.action is Action.HOLD_LINE:
            assert prev.status in (Status.ACTIVE, Status.PROBATION)
            kept = prev.limit if prev.limit_override else min(prev.limit, self._ceiling())
            assert (new.status, new.limit, new.frozen_from) == (
                Status.HOLD_FOR_REVIEW, kept, prev.status)
        if d.action is Action.RELEASE:
            assert prev.status is Status.HOLD_FOR_REVIEW
            assert (new.status, new.limit) == (prev.frozen_from, prev.limit)
            if automatic and prev.hold_until_ts > 0:
                assert now >= prev.hold_until_ts

        # §3.5: never raised while suspended, frozen or closed; raised only by a raise (within
        # the step and the cooldowns), a ladder move, the opening or an operator
        if new.limit > prev.limit:
            assert d.action in UP, d
            assert prev.status not in (Status.FROZEN, Status.CLOSED, Status.HOLD_FOR_REVIEW)
            assert new.status not in (Status.SUSPENDED, Status.FROZEN, Status.CLOSED,
                                      Status.HOLD_FOR_REVIEW)
            if prev.status is Status.SUSPENDED:
                assert d.action is Action.REINSTATE
        if new.limit < prev.limit:
            assert d.action in DOWN, d
        if d.action in (Action.RAISE, *LADDER):
            assert math.isfinite(o.risk.pd)
            assert now >= prev.last_change_ts + p.increase.cooldown_days * DAY_MS
        if d.action is Action.RAISE:
            assert prev.status is Status.ACTIVE and new.status is Status.ACTIVE
            step = min(prev.limit * p.increase.max_step_pct // 100, p.increase.max_step_abs)
            assert 0 < new.limit - prev.limit <= step
            assert now >= prev.last_cut_ts + p.decrease.raise_cooldown_days * DAY_MS
            assert o.risk.pd <= p.increase.max_pd
            # anomalous (held) or reversed spending is not demand
            assert prev.last_hold_ts == 0 or (
                now >= prev.last_hold_ts + p.decrease.raise_cooldown_days * DAY_MS)
            assert x["refund_ratio_30d"] < p.increase.max_refund_ratio
        if d.action is Action.CUT and any(REGISTRY[r].kind == "decrease" for r in d.reasons):
            # a risk cut: at most one per cut cooldown (observed distress aside: it closes the
            # open-to-buy at once), by at most one step (or to a cap, or to the balance owed)
            if now < prev.last_cut_ts + p.decrease.cooldown_days * DAY_MS:
                decrease = {r for r in d.reasons if REGISTRY[r].kind == "decrease"}
                assert decrease <= {"CASH_ADVANCE_RELIANCE", "INCOME_DECLINE"}, d
            assert new.limit >= min(prev.limit, p.limits.min_limit) or (
                new.limit == self._ceiling())

        # the ladder: one rung at a time, each after its period
        stages = p.reinstate.stages
        if d.action is Action.REINSTATE:
            assert (prev.status, new.status, new.stage) == (Status.SUSPENDED, Status.PROBATION, 1)
            assert now >= prev.status_since_ts + p.reinstate.min_suspension_days * DAY_MS
            assert o.risk.pd <= p.reinstate.max_pd
        elif d.action is Action.PROMOTE:
            assert prev.status is new.status is Status.PROBATION
            assert new.stage == prev.stage + 1 <= stages
            assert now >= prev.status_since_ts + p.reinstate.observation_days[
                prev.stage - 1] * DAY_MS
        elif d.action is Action.RESTORE:
            assert (prev.status, prev.stage, new.status) == (Status.PROBATION, stages,
                                                             Status.ACTIVE)
            assert new.limit == (prev.pre_suspension_limit if prev.limit_override else min(
                prev.pre_suspension_limit, self._ceiling()))
        elif d.action in (Action.SUSPEND, Action.RELAPSE):
            assert new.status is Status.SUSPENDED and new.limit == 0
            if d.action is Action.RELAPSE:
                assert new.pre_suspension_limit == prev.pre_suspension_limit
            else:  # the limit before the episode's cuts, within the caps
                top = max(prev.limit, prev.uncut_limit)
                cap = top if prev.limit_override else min(top, self._ceiling())
                assert min(prev.limit, cap) <= new.pre_suspension_limit <= cap
        elif new.stage != prev.stage:
            assert new.stage == 0 and d.action is Action.CLOSE
        if new.status is Status.PROBATION and prev.status is Status.PROBATION:
            assert new.stage >= prev.stage

    @invariant()
    def account_is_well_formed(self) -> None:
        acc, p = self.acc, self.policy
        assert type(acc.limit) is int and type(acc.pre_suspension_limit) is int
        assert acc.limit >= 0 and acc.pre_suspension_limit >= 0
        if acc.limit_override:
            assert p.operators.allow_override_above_max
        else:
            assert acc.limit <= p.limits.max_limit
        if self.ever_closed:
            assert acc.status is Status.CLOSED
        match acc.status:
            case Status.ACTIVE:
                assert acc.stage == 0 and acc.frozen_from is None
                assert acc.pre_suspension_limit == 0
            case Status.SUSPENDED:
                assert acc.limit == 0 and acc.stage == 0 and acc.frozen_from is None
            case Status.PROBATION:
                assert 1 <= acc.stage <= p.reinstate.stages and acc.frozen_from is None
                pct = p.reinstate.ladder[acc.stage - 1]
                assert acc.limit <= acc.pre_suspension_limit * pct // 100
            case Status.HOLD_FOR_REVIEW:
                assert acc.frozen_from in (Status.ACTIVE, Status.PROBATION)
                assert (acc.stage > 0) == (acc.frozen_from is Status.PROBATION)
            case Status.FROZEN:
                assert acc.frozen_from in (Status.ACTIVE, Status.SUSPENDED, Status.PROBATION)
                assert (acc.stage > 0) == (acc.frozen_from is Status.PROBATION)
                if acc.frozen_from is Status.SUSPENDED:
                    assert acc.limit == 0
            case Status.CLOSED:
                assert acc.limit == 0 and acc.stage == 0 and acc.pre_suspension_limit == 0
        raw = orjson.dumps(acc.to_dict())
        assert Account.from_dict(orjson.loads(raw)) == acc


SETTINGS = settings(max_examples=120, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class DefaultPolicyMachine(PolicyMachine):
    policy = DEFAULT


class OverridePolicyMachine(PolicyMachine):
    policy = VARIANT


TestDefaultPolicy = DefaultPolicyMachine.TestCase
TestDefaultPolicy.settings = SETTINGS
TestOverridePolicy = OverridePolicyMachine.TestCase
TestOverridePolicy.settings = SETTINGS
