"""The limit policy: at a decision point, the account and one observation in, the new account
and the decisions out. Pure and deterministic: no clock, no I/O, integer money.

The state machine (DESIGN §6)::

    ACTIVE ──RAISE/CUT──► ACTIVE ──SUSPEND──► SUSPENDED ──REINSTATE──► PROBATION 1
       ▲                                         ▲                       │ PROMOTE
       └──────────RESTORE (100 %)──── PROBATION n ◄── ... ◄──────────────┘
                                          └──RELAPSE──► SUSPENDED
    any ──FREEZE──► FROZEN ──UNFREEZE──► the status before;   any ──CLOSE──► CLOSED (terminal)

Semantics fixed here (and in docs/reason-codes.md):

* **Clocks** are event time. The account's clock is the newest event time it has evaluated
  (``now = max(event.ts, last_review_ts, last_change_ts, status_since_ts)``): an event that
  arrives late is judged at that clock, so no cooldown can be reopened by an old timestamp.
* **Hysteresis**: raises need ``pd <= increase.max_pd``, cuts ``pd >= decrease.pd_cut``,
  suspension ``pd >= suspend.pd_suspend``, reinstatement ``pd <= reinstate.max_pd``; the
  policy loader enforces the gaps between them (and between the debt-to-income and inflow
  thresholds). Signals that persist after the fact (late counts, 90-day worst lateness) only
  suspend on the event that brings them (a missed repayment) or while arrears are open, so a
  reinstated user is not re-suspended for the history that suspended them. A cut raises
  utilization, so utilization only cuts together with a late repayment arriving (no spiral).
* **Cooldowns**: any upward automatic move (raise, reinstate, promote, restore) waits
  ``increase.cooldown_days`` after the last limit or status change; a raise also waits
  ``decrease.raise_cooldown_days`` after a cut or suspension. Risk cuts are at most one per
  ``decrease.cooldown_days``; cap clamps, suspensions and relapses are immediate (downwards,
  for risk). Operator commands and ``opened`` are audited overrides, not automatic moves:
  they are bounded by the caps but not by the step or the cooldown.
* **FROZEN** is an operator hold: ``limit`` keeps the limit to restore (downstream must treat
  available credit as 0), ``frozen_from`` the status to return to, ``stage`` the probation
  stage. While frozen nothing moves automatically except a clamp to the caps. An unfreeze
  returns to the previous status, restarts that status's clock (a suspension or probation
  stage is not served while on hold) and re-evaluates at once, downwards only: a lateness
  recorded while frozen can suspend or relapse then.
* **set_limit** sets the limit in ACTIVE; in SUSPENDED and PROBATION it sets the
  pre-suspension limit the ladder restores (in PROBATION the limit follows at the current
  rung), so the ladder stays the only way up from a suspension. Rejected on FROZEN (unfreeze
  first) and CLOSED accounts, and above the caps unless ``operators.allow_override_above_max``.
* **Adverse-action guardrails** (``[guardrails]``, DESIGN §5): the score alone never
  suspends (a suspension needs delinquency; a very high score suspends only an account in
  arrears); a score-driven cut needs ``guardrails.score_cut_min_installments`` resolved
  installments (the cold-start treatment of new accounts: until then the score may only
  block raises) and a main driver the customer can act on (not in
  ``guardrails.non_actionable``, which adverse decisions never list among their top
  features); at most one cut per ``decrease.cooldown_days``; and within that cooldown after a
  raise, the score or debt-to-income cut only on new evidence (a late repayment or a hold
  since the raise), so a raise is not undone by the swing that follows it.
* **HOLD_FOR_REVIEW** (``[hold]``): a burst of anomalous spends (the last hour's anomaly
  scores summing to ``hold.burst_score``), one very anomalous spend, or a day's spend of
  ``hold.day_spend_share`` of the limit (``hold.new_account_day_spend_share`` in the first
  ``hold.new_account_days``) at ``hold.day_spend_velocity`` times the user's own
  daily rate, over at least ``hold.day_spend_min_count`` spends (a line drawn down at once:
  bust-out or takeover; one or two big-ticket purchases are judged by their anomaly score)
  holds the line at once:
  available credit 0, the limit kept, until an operator's ``unfreeze`` or
  ``hold.review_days`` (released at the first event after it). An arrears of
  ``hold.arrears_dpd`` days holds the line until it is paid (released on the cure) or becomes
  a suspension at ``suspend.dpd_days``. Anomalous spending is never demand: no raise within
  ``decrease.raise_cooldown_days`` of a hold, nor while refunds (charge-backs) reach
  ``increase.max_refund_ratio`` of the month's spend.
* **A non-finite score** is unusable: it moves no limit either way (blocks raises and
  reinstatement, triggers no score cut) and the decision says ``RISK_SCORE_UNAVAILABLE``.

Examples
--------
>>> from streams.records import InstallmentOverdue
>>> from streams.settings import DEFAULT_POLICY
>>> from features.outcome import Outcome
>>> from policies.account import new_account
>>> from policies.rules import neutral_features, rule_risk
>>> from policies.spec import load_policy
>>> policy = load_policy(DEFAULT_POLICY)
>>> t0 = 1_767_225_600_000
>>> acc = new_account(policy, t0)
>>> x = neutral_features(late_count_12=2, max_dpd_90d=5, overdue_amount=30_000)
>>> ev = InstallmentOverdue("e9", "u1", t0 + 10 * 86_400_000, "i2", 5)
>>> obs = Observation(ev, x, rule_risk(x, policy), Outcome("i2", "overdue", 5, 30_000, t0))
>>> acc2, [d] = decide(acc, obs, policy)
>>> d.action.value, acc2.status.value, acc2.limit, acc2.pre_suspension_limit
('SUSPEND', 'SUSPENDED', 0, 200000)
>>> d.reasons
('MISSED_REPAYMENTS',)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final, assert_never

from features.outcome import Outcome
from features.state import FeatureState
from features.vector import burst_score, spend_24h
from features.windows import DAY_MS
from policies.account import Account, Status
from policies.reasons import MAX_REASONS, REGISTRY
from policies.risk import Risk
from policies.rules import NEUTRAL_FEATURES
from policies.spec import Policy
from streams.codec import MAX_AMOUNT
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


class Action(StrEnum):
    OPEN = "OPEN"  #: ``opened``: the initial limit within the caps
    RAISE = "RAISE"
    CUT = "CUT"  #: risk cut or clamp to a cap
    SUSPEND = "SUSPEND"  #: ACTIVE -> SUSPENDED
    REINSTATE = "REINSTATE"  #: SUSPENDED -> PROBATION stage 1
    PROMOTE = "PROMOTE"  #: PROBATION stage k -> k+1
    RESTORE = "RESTORE"  #: last PROBATION stage -> ACTIVE at 100 %
    RELAPSE = "RELAPSE"  #: PROBATION -> SUSPENDED
    FREEZE = "FREEZE"
    UNFREEZE = "UNFREEZE"
    SET_LIMIT = "SET_LIMIT"
    CLOSE = "CLOSE"
    HOLD = "HOLD"  #: decision point evaluated, nothing changed
    HOLD_LINE = "HOLD_LINE"  #: ACTIVE / PROBATION -> HOLD_FOR_REVIEW (available credit 0)
    RELEASE = "RELEASE"  #: HOLD_FOR_REVIEW -> the status before (timeout, cure, operator)


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision, with its reasons (1..4 registered codes, most important first)."""

    action: Action
    old_limit: int
    new_limit: int
    old_status: Status
    new_status: Status
    old_stage: int
    new_stage: int
    reasons: tuple[str, ...]
    top_features: tuple[tuple[str, float], ...]  #: the score's top contributions, if it drove it
    risk_pd: float
    #: HOLD_FOR_REVIEW after it: when the anomaly hold ends by itself (0: none, or until cured).
    #: Core banking lifts the hold then, even if no event of the user reaches limitstream.
    hold_until_ts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (orjson) form.

        Examples
        --------
        >>> d = Decision(Action.HOLD, 5, 5, Status.ACTIVE, Status.ACTIVE, 0, 0,
        ...              ("LIMIT_UNCHANGED",), (), 0.01)
        >>> d.to_dict()["action"], d.to_dict()["reasons"]
        ('HOLD', ['LIMIT_UNCHANGED'])
        """
        return {
            "action": self.action.value,
            "old_limit": self.old_limit,
            "new_limit": self.new_limit,
            "old_status": self.old_status.value,
            "new_status": self.new_status.value,
            "old_stage": self.old_stage,
            "new_stage": self.new_stage,
            "reasons": list(self.reasons),
            "top_features": [[n, v] for n, v in self.top_features],
            "risk_pd": self.risk_pd,
            "hold_until_ts": self.hold_until_ts,
        }


@dataclass(frozen=True, slots=True)
class Observation:
    """What the policy sees at a decision point."""

    event: InputEvent
    features: Mapping[str, float]  #: keyed by features.names.FEATURE_NAMES, after this event
    risk: Risk
    outcome: Outcome | None = None  #: the installment this event resolved, if any
    anomaly: float | None = None  #: this event's anomaly score (transactions), if any


class CommandRejected(ValueError):
    """An operator command the policy refuses; the engine sends it to ``dead-letter``.

    ``code``: ``unknown_operator``, ``account_closed``, ``account_frozen`` or
    ``limit_out_of_bounds``; ``field``: the command's field at fault.
    """

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


# -- the observation, read once ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    now: int  #: the account's clock (see the module doc)
    x: Mapping[str, float]  #: finite, non-negative features
    pd: float  #: the score in [0, 1]; meaningful only if ``pd_ok``
    pd_ok: bool
    contributions: tuple[tuple[str, float], ...]
    fallback: str  #: a registered reason code, or ""
    missed: bool  #: an overdue notice on this event
    late: bool  #: a late repayment outcome (overdue notice or paid late) on this event
    ontime: bool  #: paid in full by the due date on this event
    outcome_dpd: int
    anomaly: float  #: this event's anomaly score, 0 when none
    burst: float  #: the last hour's anomaly scores, summed
    day_spend_share: float  #: the last 24 h's spend / the limit (0 without a limit)
    #: A risk cut within decrease.raise_cooldown_days: a day's spend against a limit the policy
    #: just cut is no evidence of a takeover (the line is already under watch).
    recently_cut: bool
    resolved: int  #: resolved installments among the last 12 (on time + late)
    #: The line's 24-hour spend share that holds it (lower for an account opened recently).
    hold_day_share: float
    non_actionable: frozenset[str]  #: features never shown as the reason of an adverse action
    income: int  #: known monthly income (0 = unknown)
    ceiling: int  #: the binding cap: min(max_limit, income cap)
    ceiling_reason: str  #: MAX_LIMIT_CAP or INCOME_CAP


def _hold_day_share(acc: Account, ts: int, p: Policy) -> float:
    """The 24-hour spend share of the limit that holds the line at ``ts``."""
    h = p.hold
    new = acc.opened_ts > 0 and ts < acc.opened_ts + h.new_account_days * DAY_MS
    return h.new_account_day_spend_share if new else h.day_spend_share


def _now(acc: Account, ts: int) -> int:
    return max(ts, acc.last_review_ts, acc.last_change_ts, acc.status_since_ts)


def _round_down(v: int, unit: int) -> int:
    return v - v % unit


def _ceiling(p: Policy, income: int) -> tuple[int, str]:
    lim = p.limits
    if income > 0:
        # Rounded down so that a clamped automatic limit stays a multiple of the rounding.
        cap = _round_down(income * lim.income_multiple_pct // 100, lim.rounding)
        if cap < lim.max_limit:
            return cap, "INCOME_CAP"
    return lim.max_limit, "MAX_LIMIT_CAP"


def _features(raw: Mapping[str, float]) -> dict[str, float]:
    # A missing, non-finite or negative value (all features are >= 0 by definition) reads as
    # neutral: a broken feature must neither raise nor cut a limit.
    out: dict[str, float] = {}
    for name, neutral in NEUTRAL_FEATURES.items():
        v = raw.get(name, neutral)
        out[name] = v if isinstance(v, int | float) and math.isfinite(v) and v >= 0 else neutral
    return out


def _context(acc: Account, obs: Observation, p: Policy, income_override: int = 0) -> _Ctx:
    x = _features(obs.features)
    pd = obs.risk.pd
    pd_ok = isinstance(pd, int | float) and math.isfinite(pd)
    fb = ""
    if obs.risk.source == "rules" and obs.risk.fallback_reason:
        fb = obs.risk.fallback_reason if obs.risk.fallback_reason in REGISTRY else "MODEL_FALLBACK"
    o = obs.outcome
    missed = o is not None and o.kind == "overdue"
    late = missed or (o is not None and o.kind == "paid_in_full" and o.days_past_due > 0)
    anomaly = obs.anomaly if obs.anomaly is not None and math.isfinite(obs.anomaly) else 0.0
    income = income_override or int(min(x["income_monthly"], MAX_AMOUNT))
    ceiling, ceiling_reason = _ceiling(p, income)
    return _Ctx(
        now=_now(acc, obs.event.ts),
        x=x,
        pd=min(1.0, max(0.0, float(pd))) if pd_ok else 0.0,
        pd_ok=pd_ok,
        contributions=tuple((str(n), float(v)) for n, v in obs.risk.contributions),
        fallback=fb,
        missed=missed,
        late=late,
        ontime=o is not None and o.kind == "paid_in_full" and o.days_past_due == 0,
        outcome_dpd=o.days_past_due if o is not None else 0,
        anomaly=max(0.0, anomaly),
        burst=x["anomaly_burst_1h"],
        day_spend_share=x["spend_sum_24h"] / acc.limit if acc.limit > 0 else 0.0,
        recently_cut=acc.last_cut_ts > 0 and _now(acc, obs.event.ts) < (
            acc.last_cut_ts + p.decrease.raise_cooldown_days * DAY_MS),
        resolved=int(x["ontime_count_12"] + x["late_count_12"]),
        hold_day_share=_hold_day_share(acc, obs.event.ts, p),
        non_actionable=frozenset(p.guardrails.non_actionable),
        income=income,
        ceiling=ceiling,
        ceiling_reason=ceiling_reason,
    )


def _decision(action: Action, old: Account, new: Account, reasons: Sequence[str],
              ctx: _Ctx) -> Decision:
    codes: list[str] = []
    for c in reasons:
        if c not in REGISTRY:
            raise ValueError(f"unregistered reason code {c!r}")  # a bug in this module
        if c not in codes and c != ctx.fallback:
            codes.append(c)
    if not codes:
        raise ValueError(f"{action} decision without a reason")  # a bug in this module
    # The fallback is context, not the cause: it takes the last slot, never a cause's place
    # among the first three.
    codes = [*codes[: MAX_REASONS - 1], ctx.fallback] if ctx.fallback else codes[:MAX_REASONS]
    driven = any(REGISTRY[c].score_based for c in codes)
    top = ctx.contributions if driven else ()
    if action in _ADVERSE:
        # What the customer is told drove an adverse action must be something they can act on.
        top = tuple((n, v) for n, v in top if n not in ctx.non_actionable)
    return Decision(
        action=action,
        old_limit=old.limit,
        new_limit=new.limit,
        old_status=old.status,
        new_status=new.status,
        old_stage=old.stage,
        new_stage=new.stage,
        reasons=tuple(codes),
        top_features=top,
        risk_pd=ctx.pd if ctx.pd_ok else 1.0,
        hold_until_ts=new.hold_until_ts if new.status is Status.HOLD_FOR_REVIEW else 0,
    )


def _score_blocker(ctx: _Ctx, threshold: float, code: str) -> list[str]:
    """The reason an upward move is blocked by the score, if it is."""
    if not ctx.pd_ok:
        return ["RISK_SCORE_UNAVAILABLE"]
    return [code] if ctx.pd > threshold else []


# -- the pieces of the state machine -------------------------------------------------------

#: Cut reasons that are observed distress, not a score: they may close the open-to-buy.
_DISTRESS: Final = frozenset({"CASH_ADVANCE_RELIANCE", "INCOME_DECLINE"})
#: Actions that take credit away: their top features never name a non-actionable feature.
_ADVERSE: Final = frozenset({"CUT", "SUSPEND", "RELAPSE", "HOLD_LINE"})


def _suspend_reasons(ctx: _Ctx, p: Policy, *, probation: bool) -> list[str]:
    """Why the account must be suspended now (ACTIVE) or relapse (PROBATION), if it must.

    Every reason is delinquency: the score adds VERY_HIGH_RISK_SCORE only to an account with
    arrears at least ``hold.arrears_dpd`` days old (a score alone never suspends)."""
    x, sus = ctx.x, p.suspend
    out: list[str] = []
    if ctx.outcome_dpd >= sus.dpd_days or (
            x["overdue_amount"] > 0 and x["max_dpd_90d"] >= sus.dpd_days):
        out.append("SEVERE_DELINQUENCY")
    if probation:
        if ctx.late:
            out.append("LATE_IN_PROBATION")
    elif ctx.late and x["late_count_12"] >= sus.missed_count:
        out.append("MISSED_REPAYMENTS")
    # Real arrears (as old as an arrears hold), not a technical day late: the score can only
    # hasten a suspension the delinquency already argues for.
    delinquent = x["overdue_amount"] > 0 and max(
        ctx.outcome_dpd, int(x["max_dpd_90d"])) >= p.hold.arrears_dpd
    if delinquent and ctx.pd_ok and ctx.pd >= sus.pd_suspend:
        out.append("VERY_HIGH_RISK_SCORE")
    return out


def _hold_reasons(ctx: _Ctx, p: Policy, *, arrears: bool) -> tuple[list[str], int]:
    """Why the line must be held now, and until when (0: until the arrears are paid)."""
    h, x = p.hold, ctx.x
    anomaly: list[str] = []
    if ctx.burst >= h.burst_score:
        anomaly.append("SPENDING_BURST")
    if ctx.anomaly >= h.anomaly_single:
        anomaly.append("SEVERE_ANOMALY")
    if (ctx.day_spend_share >= ctx.hold_day_share and not ctx.recently_cut
            and ctx.x["spend_velocity_24h"] >= h.day_spend_velocity
            and ctx.x["spend_count_24h"] >= h.day_spend_min_count):
        anomaly.append("LINE_DRAWN_IN_A_DAY")
    if anomaly:
        return anomaly, ctx.now + h.review_days * DAY_MS
    if arrears and x["overdue_amount"] > 0 and max(
            ctx.outcome_dpd, int(x["max_dpd_90d"])) >= h.arrears_dpd:
        return ["ARREARS_HOLD"], 0
    return [], 0


def _to_suspended(acc: Account, ctx: _Ctx, base: int) -> Account:
    return replace(
        acc, status=Status.SUSPENDED, limit=0, stage=0, pre_suspension_limit=base,
        last_change_ts=ctx.now, last_cut_ts=ctx.now, status_since_ts=ctx.now,
        frozen_from=None, ontime_in_stage=0, limit_override=False, hold_until_ts=0,
        uncut_limit=0,
    )


def _hold(acc: Account, ctx: _Ctx, reasons: list[str],
          until: int) -> tuple[Account, Decision]:
    """ACTIVE / PROBATION -> HOLD_FOR_REVIEW, the kept limit clamped to the caps."""
    capped, cap_reasons = _cap(acc, ctx)
    new = replace(acc, status=Status.HOLD_FOR_REVIEW, frozen_from=acc.status, limit=capped,
                  hold_until_ts=until, last_hold_ts=ctx.now,
                  last_change_ts=ctx.now if capped != acc.limit else acc.last_change_ts)
    return new, _decision(Action.HOLD_LINE, acc, new, [*reasons, *cap_reasons], ctx)


def _suspension_base(acc: Account, ctx: _Ctx, p: Policy) -> int:
    """What the ladder will restore: the limit before the cuts of the episode that ends in
    this suspension (cuts less than ``decrease.raise_cooldown_days`` apart), within the caps."""
    base = acc.limit
    if (acc.uncut_limit > base
            and ctx.now < acc.last_cut_ts + p.decrease.raise_cooldown_days * DAY_MS):
        base = acc.uncut_limit
    return base if acc.limit_override else min(base, ctx.ceiling)


def _cap(acc: Account, ctx: _Ctx) -> tuple[int, list[str]]:
    """The limit clamped to the caps (an operator override stands until the next cut)."""
    if acc.limit_override or acc.limit <= ctx.ceiling:
        return acc.limit, []
    return ctx.ceiling, [ctx.ceiling_reason]


def _ladder_limit(base: int, stage: int, acc: Account, ctx: _Ctx, p: Policy) -> int:
    """The limit at probation ``stage`` (``len(ladder)`` = the last rung, 100 %)."""
    pct = p.reinstate.ladder[stage - 1]
    # 100 % restores the pre-suspension limit exactly; lower rungs are rounded down.
    v = base if pct == 100 else _round_down(base * pct // 100, p.limits.rounding)
    return v if acc.limit_override else min(v, ctx.ceiling)


def _score_may_cut(ctx: _Ctx, p: Policy) -> bool:
    """The score is high enough to cut, and the guardrails let it: history beyond the cold
    start, and a main driver the customer can act on."""
    if not (ctx.pd_ok and ctx.pd >= p.decrease.pd_cut):
        return False
    if ctx.resolved < p.guardrails.score_cut_min_installments:
        return False
    pushing = [(n, c) for n, c in ctx.contributions if c > 0]
    return bool(pushing) and max(pushing, key=lambda nc: nc[1])[0] not in ctx.non_actionable


def _cut_reasons(acc: Account, ctx: _Ctx, p: Policy) -> tuple[list[str], list[str]]:
    """The reasons to cut now, and the hold reasons of a cut the raise guardrail prevents."""
    x, dec = ctx.x, p.decrease
    out: list[str] = []
    if _score_may_cut(ctx, p):
        out.append("HIGH_RISK_SCORE")
    if ctx.late and x["utilization"] >= dec.utilization_spike:
        out.append("UTILIZATION_SPIKE_WITH_LATENESS")
    if x["inflow_trend"] < dec.income_drop_trend:
        out.append("INCOME_DECLINE")
    if ctx.income > 0 and x["debt_to_income"] > dec.max_dti:
        out.append("HIGH_DEBT_TO_INCOME")
    if (x["cash_advance_share_30d"] >= dec.cash_advance_share
            and x["utilization"] >= dec.cash_advance_utilization):
        out.append("CASH_ADVANCE_RELIANCE")
    # Within the cooldown after a raise, the slow-moving measures (score, debt-to-income) must
    # not undo it on their own: they knew what the raise knew. New evidence (a late repayment
    # or a hold since the raise) lifts the guard.
    fresh = (ctx.late or x["overdue_amount"] > 0 or acc.last_late_ts > acc.last_raise_ts
             or acc.last_hold_ts > acc.last_raise_ts)
    if ctx.now < acc.last_raise_ts + dec.cooldown_days * DAY_MS and not fresh:
        slow = [c for c in out if c in ("HIGH_RISK_SCORE", "HIGH_DEBT_TO_INCOME")]
        if slow:
            kept = [c for c in out if c not in slow]
            return kept, ([] if kept else [*slow, "RECENT_RAISE_NO_NEW_EVIDENCE"])
    return out, []


def _raise_blockers(acc: Account, ctx: _Ctx, p: Policy) -> list[str]:
    """Why a raise cannot happen now, most important first (empty: it can)."""
    x, inc = ctx.x, p.increase
    out: list[str] = []
    if acc.limit_override:
        out.append("OPERATOR_OVERRIDE_ACTIVE")
    if acc.limit >= ctx.ceiling:
        out.append("AT_MAXIMUM_LIMIT")
    if x["overdue_amount"] > 0:
        out.append("ARREARS_OUTSTANDING")
    # A cured customer earns raises again after a clean look-back, not after a clean year.
    if (ctx.late or x["late_count_12"] > inc.max_late_12
            or ctx.now < acc.last_late_ts + inc.late_lookback_days * DAY_MS):
        out.append("RECENT_LATE_PAYMENT")
    out += _score_blocker(ctx, inc.max_pd, "RISK_TOO_HIGH_FOR_INCREASE")
    if x["ontime_count_12"] < inc.min_ontime_12:
        out.append("FEW_ONTIME_PAYMENTS")
    if ctx.now < acc.opened_ts + inc.min_days_since_open * DAY_MS:
        out.append("ACCOUNT_TOO_NEW")
    if max(x["utilization_peak_30d"], x["utilization"]) < inc.min_utilization:
        out.append("LOW_UTILIZATION")
    # Spending that was anomalous (held) or charged back is not demand for more credit.
    if acc.last_hold_ts and ctx.now < acc.last_hold_ts + p.decrease.raise_cooldown_days * DAY_MS:
        out.append("RECENT_REVIEW_HOLD")
    if x["refund_ratio_30d"] >= inc.max_refund_ratio:
        out.append("SPEND_REVERSED")
    if inc.require_income and ctx.income <= 0:
        out.append("INCOME_NOT_VERIFIED")
    if ctx.income > 0 and x["debt_to_income"] > inc.max_dti:
        out.append("DTI_TOO_HIGH_FOR_INCREASE")
    if x["inflow_trend"] < inc.min_inflow_trend:
        out.append("INCOME_TREND_WEAK")
    if ctx.now < acc.last_change_ts + inc.cooldown_days * DAY_MS:
        out.append("RECENT_LIMIT_CHANGE")
    if ctx.now < acc.last_cut_ts + p.decrease.raise_cooldown_days * DAY_MS:
        out.append("RECENT_LIMIT_CUT")
    return out


def _restore_after_cure(acc: Account, ctx: _Ctx, p: Policy) -> tuple[Account, Decision] | None:
    """A limit cut in a delinquency episode comes back, in one step, once the customer has
    cured, as a suspended one's comes back by the ladder: the episode's cuts (``uncut_limit``:
    the limit before them) lie within ``decrease.raise_cooldown_days`` of a lateness, nothing
    is overdue, an installment was paid in full by its due date since the last lateness,
    ``reinstate.min_suspension_days`` have passed since it and ``increase.cooldown_days``
    since the last change, and the score is at or below ``reinstate.max_pd``. Raises, which
    add one step at a time after a clean ``increase.late_lookback_days``, would take a year to
    undo a cut to the balance owed. (``None``: not now.)"""
    x = ctx.x
    episode = p.decrease.raise_cooldown_days * DAY_MS
    if (acc.limit_override or acc.uncut_limit <= acc.limit or not acc.last_late_ts
            or abs(acc.last_late_ts - acc.last_cut_ts) > episode
            or x["overdue_amount"] > 0
            or not x["days_since_ontime"] < x["days_since_missed"]
            or ctx.now < acc.last_late_ts + p.reinstate.min_suspension_days * DAY_MS
            or ctx.now < acc.last_change_ts + p.increase.cooldown_days * DAY_MS
            or _score_blocker(ctx, p.reinstate.max_pd, "RISK_TOO_HIGH_FOR_REINSTATEMENT")):
        return None
    target = min(acc.uncut_limit, ctx.ceiling)
    if target <= acc.limit:
        return None
    new = replace(acc, limit=target, uncut_limit=0, last_change_ts=ctx.now,
                  last_raise_ts=ctx.now)
    reasons = ["CUT_RESTORED_AFTER_CURE", "ARREARS_CLEARED", "RISK_SCORE_RECOVERED"]
    if target < acc.uncut_limit:
        reasons.append(ctx.ceiling_reason)
    return new, _decision(Action.RAISE, acc, new, reasons, ctx)


def _active(acc: Account, ctx: _Ctx, p: Policy, allow_up: bool) -> tuple[Account, Decision]:
    suspend = _suspend_reasons(ctx, p, probation=False)
    if suspend:
        new = _to_suspended(acc, ctx, _suspension_base(acc, ctx, p))
        return new, _decision(Action.SUSPEND, acc, new, suspend, ctx)
    hold, until = _hold_reasons(ctx, p, arrears=True)
    if hold:
        return _hold(acc, ctx, hold, until)

    risk, guarded = _cut_reasons(acc, ctx, p)
    blocked: list[str] = list(guarded)
    target, override, cut = acc.limit, acc.limit_override, False
    distress = [c for c in risk if c in _DISTRESS] if p.decrease.distress_to_balance else []
    x = ctx.x
    if distress == ["INCOME_DECLINE"] and not (
            x["inflow_trend"] < p.decrease.income_collapse_trend
            or ctx.late or x["overdue_amount"] > 0 or x["cash_advance_share_30d"] > 0):
        # Inflows alone are a noisy income measure (irregular earners, a month's dip): short of
        # a collapse they close the open-to-buy only with a second sign of distress (a
        # lateness, arrears, cash advances); alone they cut one step, once per cooldown.
        distress = []
    owed = -(-int(ctx.x["balance"]) // p.limits.rounding) * p.limits.rounding
    in_cooldown = ctx.now < acc.last_cut_ts + p.decrease.cooldown_days * DAY_MS
    if in_cooldown and distress and max(owed, p.limits.min_limit) < acc.limit:
        # Observed distress closes the open-to-buy even inside the cooldown of an earlier
        # (one-step) cut: the cooldown bounds how often the score cuts, not evidence.
        risk = distress
        in_cooldown = False
    if risk:
        if in_cooldown:
            blocked = [*risk, "CUT_COOLDOWN"]
        else:
            step_down = acc.limit - acc.limit * p.decrease.step_pct // 100
            if distress:
                # Hard evidence of distress (not the score): close the open-to-buy, the limit
                # down to what is owed (rounded up), never to less than one step.
                step_down = min(step_down, owed)
            v = min(acc.limit, max(_round_down(step_down, p.limits.rounding),
                                   p.limits.min_limit))
            if v < acc.limit:
                target, override, cut = v, False, True  # a risk cut ends an override
            else:
                blocked = [*risk, "AT_MINIMUM_LIMIT"]
    reasons = list(risk) if cut else []
    if not override and target > ctx.ceiling:
        # The cap binds harder than the cut (or alone): it is the first reason.
        target, reasons = ctx.ceiling, [ctx.ceiling_reason, *reasons]
    if target < acc.limit:
        episode = acc.uncut_limit and ctx.now < (
            acc.last_cut_ts + p.decrease.raise_cooldown_days * DAY_MS)
        new = replace(acc, limit=target, last_change_ts=ctx.now, limit_override=override,
                      last_cut_ts=ctx.now if cut else acc.last_cut_ts,
                      uncut_limit=(acc.uncut_limit if episode else acc.limit) if cut
                      else acc.uncut_limit)
        return new, _decision(Action.CUT, acc, new, reasons, ctx)
    if blocked:
        return acc, _decision(Action.HOLD, acc, acc, blocked, ctx)
    if not allow_up:
        return acc, _decision(Action.HOLD, acc, acc, ["LIMIT_UNCHANGED"], ctx)

    restored = _restore_after_cure(acc, ctx, p)
    if restored is not None:
        return restored
    blockers = _raise_blockers(acc, ctx, p)
    if blockers:
        return acc, _decision(Action.HOLD, acc, acc, blockers, ctx)
    inc = p.increase
    step = min(acc.limit * inc.max_step_pct // 100, inc.max_step_abs)
    uncapped = _round_down(acc.limit + step, p.limits.rounding)
    new_limit = min(uncapped, ctx.ceiling)
    if new_limit <= acc.limit:
        return acc, _decision(Action.HOLD, acc, acc, ["LIMIT_UNCHANGED"], ctx)
    reasons = ["LOW_RISK_SCORE", "ONTIME_HISTORY", "HIGH_UTILIZATION_DEMAND"]
    if new_limit < uncapped:
        reasons.append(ctx.ceiling_reason)
    elif ctx.income > 0:
        reasons.append("INCOME_SUPPORTS")
    new = replace(acc, limit=new_limit, last_change_ts=ctx.now, last_raise_ts=ctx.now,
                  uncut_limit=0)
    return new, _decision(Action.RAISE, acc, new, reasons, ctx)


def _suspended(acc: Account, ctx: _Ctx, p: Policy, allow_up: bool) -> tuple[Account, Decision]:
    rei = p.reinstate
    if not allow_up:
        return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_SUSPENDED"], ctx)
    blockers: list[str] = []
    period = ctx.now < acc.status_since_ts + rei.min_suspension_days * DAY_MS
    if period:
        blockers.append("SUSPENSION_PERIOD_NOT_MET")
    # The clocks below are only named when they bind beyond the suspension period (the event
    # that suspended is usually late and a status change): one reason per cause.
    if (ctx.now < acc.last_late_ts + rei.min_suspension_days * DAY_MS
            and acc.last_late_ts > acc.status_since_ts):
        blockers.append("RECENT_LATE_PAYMENT")
    if ctx.x["overdue_amount"] > 0:
        blockers.append("ARREARS_OUTSTANDING")
    blockers += _score_blocker(ctx, rei.max_pd, "RISK_TOO_HIGH_FOR_REINSTATEMENT")
    if ctx.anomaly >= p.hold.anomaly_single or ctx.burst >= p.hold.burst_score:
        blockers.append("SEVERE_ANOMALY")
    if ctx.now < acc.last_change_ts + p.increase.cooldown_days * DAY_MS and not period:
        blockers.append("RECENT_LIMIT_CHANGE")
    if blockers:
        return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_SUSPENDED", *blockers], ctx)
    new = replace(acc, status=Status.PROBATION, stage=1,
                  limit=_ladder_limit(acc.pre_suspension_limit, 1, acc, ctx, p),
                  last_change_ts=ctx.now, status_since_ts=ctx.now, ontime_in_stage=0,
                  stage_balance=int(ctx.x["balance"]))
    reasons = ["SUSPENSION_PERIOD_MET", "ARREARS_CLEARED", "RISK_SCORE_RECOVERED"]
    return new, _decision(Action.REINSTATE, acc, new, reasons, ctx)


def _probation(acc: Account, ctx: _Ctx, p: Policy, allow_up: bool) -> tuple[Account, Decision]:
    rei = p.reinstate
    relapse = _suspend_reasons(ctx, p, probation=True)
    if relapse:
        new = _to_suspended(acc, ctx, acc.pre_suspension_limit)
        return new, _decision(Action.RELAPSE, acc, new, relapse, ctx)
    hold, until = _hold_reasons(ctx, p, arrears=False)
    if hold:
        return _hold(acc, ctx, hold, until)
    capped, cap_reasons = _cap(acc, ctx)
    if cap_reasons:
        new = replace(acc, limit=capped, last_change_ts=ctx.now)
        return new, _decision(Action.CUT, acc, new, cap_reasons, ctx)
    if not allow_up:
        return acc, _decision(Action.HOLD, acc, acc, ["LIMIT_UNCHANGED"], ctx)
    # A policy swapped for one with a shorter ladder leaves a stage beyond it: treat it as the
    # last stage rather than fail.
    stage = max(1, min(acc.stage, rei.stages))
    blockers: list[str] = []
    period = ctx.now < acc.status_since_ts + rei.observation_days[stage - 1] * DAY_MS
    if period:
        blockers.append("STAGE_PERIOD_NOT_MET")
    if acc.ontime_in_stage < rei.min_ontime_in_stage:
        blockers.append("FEW_ONTIME_IN_STAGE")
    if ctx.x["overdue_amount"] > 0:
        blockers.append("ARREARS_OUTSTANDING")
    blockers += _score_blocker(ctx, rei.max_pd, "RISK_TOO_HIGH_FOR_REINSTATEMENT")
    # What was drawn inside the stage, not the balance owed from before it (the arrears that
    # led to the suspension would otherwise hold a cured customer at the first rung).
    drawn = max(0.0, ctx.x["balance"] - acc.stage_balance)
    if acc.limit > 0 and drawn / acc.limit > rei.max_utilization:
        blockers.append("UTILIZATION_TOO_HIGH")
    if ctx.now < acc.last_change_ts + p.increase.cooldown_days * DAY_MS and not period:
        blockers.append("RECENT_LIMIT_CHANGE")  # named only when it binds beyond the stage
    if blockers:
        return acc, _decision(Action.HOLD, acc, acc, blockers, ctx)
    limit = _ladder_limit(acc.pre_suspension_limit, stage + 1, acc, ctx, p)
    if stage < rei.stages:
        new = replace(acc, stage=stage + 1, limit=limit, last_change_ts=ctx.now,
                      status_since_ts=ctx.now, ontime_in_stage=0,
                      stage_balance=int(ctx.x["balance"]))
        reasons = ["STAGE_OBSERVATION_MET", "RISK_SCORE_RECOVERED"]
        return new, _decision(Action.PROMOTE, acc, new, reasons, ctx)
    new = replace(acc, status=Status.ACTIVE, stage=0, limit=limit, pre_suspension_limit=0,
                  last_change_ts=ctx.now, status_since_ts=ctx.now, ontime_in_stage=0,
                  stage_balance=0, uncut_limit=0)
    reasons = ["LADDER_COMPLETE", "STAGE_OBSERVATION_MET", "RISK_SCORE_RECOVERED"]
    return new, _decision(Action.RESTORE, acc, new, reasons, ctx)


def _release(acc: Account, ctx: _Ctx) -> Account:
    return replace(acc, status=acc.frozen_from or Status.ACTIVE, frozen_from=None,
                   hold_until_ts=0)


def _held(acc: Account, ctx: _Ctx, p: Policy, allow_up: bool) -> tuple[Account, Decision]:
    """HOLD_FOR_REVIEW: delinquency escalates to a suspension; a new anomaly extends an
    anomaly hold; the timeout (anomaly) or the cure (arrears) releases the line."""
    under = acc.frozen_from or Status.ACTIVE
    probation = under is Status.PROBATION
    suspend = _suspend_reasons(ctx, p, probation=probation)
    if suspend:
        base = acc.pre_suspension_limit if probation else _suspension_base(acc, ctx, p)
        new = _to_suspended(acc, ctx, base)
        action = Action.RELAPSE if probation else Action.SUSPEND
        return new, _decision(action, acc, new, suspend, ctx)
    capped, cap_reasons = _cap(acc, ctx)
    if cap_reasons:  # the kept limit obeys the caps, as a frozen one does
        new = replace(acc, limit=capped, last_change_ts=ctx.now)
        return new, _decision(Action.CUT, acc, new, [*cap_reasons, "ACCOUNT_HELD"], ctx)
    anomaly, until = _hold_reasons(ctx, p, arrears=False)
    if anomaly:
        new = replace(acc, hold_until_ts=max(acc.hold_until_ts, until), last_hold_ts=ctx.now)
        return new, _decision(Action.HOLD, acc, new, ["ACCOUNT_HELD", *anomaly], ctx)
    if acc.hold_until_ts > 0:
        if ctx.now < acc.hold_until_ts:
            return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_HELD"], ctx)
        new = _release(acc, ctx)
        # Still in arrears of the hold's age: the anomaly hold becomes an arrears hold.
        arrears, _ = _hold_reasons(ctx, p, arrears=not probation)
        if arrears:
            new = replace(acc, hold_until_ts=0)
            return new, _decision(Action.HOLD, acc, new, ["ACCOUNT_HELD", *arrears], ctx)
        return new, _decision(Action.RELEASE, acc, new, ["HOLD_REVIEW_TIMEOUT"], ctx)
    if ctx.x["overdue_amount"] > 0:
        return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_HELD", "ARREARS_OUTSTANDING"],
                              ctx)
    new = _release(acc, ctx)
    return new, _decision(Action.RELEASE, acc, new, ["ARREARS_CLEARED"], ctx)


def _frozen(acc: Account, ctx: _Ctx) -> tuple[Account, Decision]:
    capped, cap_reasons = _cap(acc, ctx)
    if cap_reasons:
        new = replace(acc, limit=capped, last_change_ts=ctx.now)
        return new, _decision(Action.CUT, acc, new, [*cap_reasons, "ACCOUNT_FROZEN"], ctx)
    return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_FROZEN"], ctx)


def _evaluate(acc: Account, ctx: _Ctx, p: Policy, allow_up: bool) -> tuple[Account, Decision]:
    """The automatic policy for the account's status (``allow_up=False``: downwards only)."""
    match acc.status:
        case Status.ACTIVE:
            return _active(acc, ctx, p, allow_up)
        case Status.SUSPENDED:
            return _suspended(acc, ctx, p, allow_up)
        case Status.PROBATION:
            return _probation(acc, ctx, p, allow_up)
        case Status.HOLD_FOR_REVIEW:
            return _held(acc, ctx, p, allow_up)
        case Status.FROZEN:
            return _frozen(acc, ctx)
        case Status.CLOSED:
            return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_CLOSED"], ctx)
        case _:
            assert_never(acc.status)


def _underlying(acc: Account) -> Status:
    held = acc.status in (Status.FROZEN, Status.HOLD_FOR_REVIEW)
    return acc.frozen_from if held and acc.frozen_from else acc.status


def _bookkeeping(acc: Account, ctx: _Ctx) -> Account:
    """What every evaluated event records, whatever is decided: the review time, lateness,
    on-time repayments inside a probation stage."""
    under = _underlying(acc)
    last_late = acc.last_late_ts
    # While suspended, paying arrears late is the cure, not a new lateness: only a new overdue
    # notice restarts the clean period reinstatement waits for.
    if ctx.missed or (ctx.late and under is not Status.SUSPENDED):
        last_late = ctx.now
    ontime = acc.ontime_in_stage + (1 if ctx.ontime and under is Status.PROBATION else 0)
    return replace(acc, last_review_ts=ctx.now, last_late_ts=last_late, ontime_in_stage=ontime)


def _open(acc: Account, ev: AccountOpened, ctx: _Ctx, p: Policy) -> tuple[Account, Decision]:
    initial = min(ev.initial_limit, ctx.ceiling)
    reasons = ["ACCOUNT_OPENED", *([ctx.ceiling_reason] if initial < ev.initial_limit else [])]
    opened = replace(acc, opened_ts=ev.ts)
    match acc.status:
        case Status.ACTIVE:
            new = replace(opened, limit=initial, limit_override=False,
                          last_change_ts=ctx.now if initial != acc.limit else acc.last_change_ts)
        case Status.SUSPENDED:
            new = replace(opened, pre_suspension_limit=initial, limit_override=False)
        case Status.PROBATION:
            new = replace(opened, pre_suspension_limit=initial, limit_override=False)
            new = replace(new, limit=_ladder_limit(initial, max(1, new.stage), new, ctx, p))
            if new.limit != acc.limit:
                new = replace(new, last_change_ts=ctx.now)
        case Status.FROZEN | Status.HOLD_FOR_REVIEW:
            # The hold wins: the opening date is recorded, the kept limit only obeys the caps,
            # and the initial limit waits for the operator (or the release).
            capped, cap_reasons = _cap(opened, ctx)
            if cap_reasons:
                new = replace(opened, limit=capped, last_change_ts=ctx.now)
                return new, _decision(Action.CUT, acc, new, [*cap_reasons, "ACCOUNT_FROZEN"],
                                      ctx)
            return opened, _decision(Action.HOLD, acc, opened, ["ACCOUNT_FROZEN"], ctx)
        case Status.CLOSED:
            return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_CLOSED"], ctx)
        case _:
            assert_never(acc.status)
    return new, _decision(Action.OPEN, acc, new, reasons, ctx)


def _close(acc: Account, ctx: _Ctx) -> tuple[Account, Decision]:
    if acc.status is Status.CLOSED:
        return acc, _decision(Action.HOLD, acc, acc, ["ACCOUNT_CLOSED"], ctx)
    new = replace(acc, status=Status.CLOSED, limit=0, stage=0, pre_suspension_limit=0,
                  frozen_from=None, ontime_in_stage=0, limit_override=False,
                  last_change_ts=ctx.now, status_since_ts=ctx.now)
    return new, _decision(Action.CLOSE, acc, new, ["ACCOUNT_CLOSED"], ctx)


def _set_limit(acc: Account, ev: LimitCommand, ctx: _Ctx, p: Policy) -> tuple[Account, Decision]:
    n = ev.new_limit
    override = n > ctx.ceiling
    if override and not p.operators.allow_override_above_max:
        cap = "limits.max_limit" if ctx.ceiling_reason == "MAX_LIMIT_CAP" else "the income cap"
        raise CommandRejected("limit_out_of_bounds",
                              f"new_limit {n} is above {cap} ({ctx.ceiling})", "new_limit")
    reasons = ["OPERATOR_OVERRIDE_ABOVE_CAP", "OPERATOR_SET_LIMIT"] if override else [
        "OPERATOR_SET_LIMIT"]
    match acc.status:
        case Status.ACTIVE:
            new = replace(acc, limit=n, limit_override=override)
        case Status.SUSPENDED:
            # The ladder stays the only way up from a suspension: the operator sets what it
            # restores.
            new = replace(acc, pre_suspension_limit=n, limit_override=override)
        case Status.PROBATION:
            new = replace(acc, pre_suspension_limit=n, limit_override=override)
            new = replace(new, limit=_ladder_limit(n, max(1, acc.stage), new, ctx, p))
        case Status.FROZEN | Status.HOLD_FOR_REVIEW:
            raise CommandRejected("account_frozen", f"set_limit on a {acc.status.value} "
                                  "account: unfreeze (release) it first", "kind")
        case Status.CLOSED:
            raise CommandRejected("account_closed", "the account is closed", "kind")
        case _:
            assert_never(acc.status)
    if new.limit != acc.limit:
        new = replace(new, last_change_ts=ctx.now)
    return new, _decision(Action.SET_LIMIT, acc, new, reasons, ctx)


def _command(acc: Account, ev: LimitCommand, ctx: _Ctx,
             p: Policy) -> tuple[Account, list[Decision]]:
    if ev.operator not in p.operators.allowed:
        raise CommandRejected("unknown_operator",
                              f"operator {ev.operator!r} is not in operators.allowed", "operator")
    if acc.status is Status.CLOSED:
        raise CommandRejected("account_closed", "the account is closed", "kind")
    match ev.kind:
        case "freeze":
            if acc.status is Status.FROZEN:
                return acc, [_decision(Action.HOLD, acc, acc, ["ALREADY_FROZEN"], ctx)]
            capped, cap_reasons = _cap(acc, ctx)
            # A held line frozen by an operator returns to the status under the hold.
            new = replace(acc, status=Status.FROZEN, frozen_from=_underlying(acc),
                          limit=capped, status_since_ts=ctx.now, last_change_ts=ctx.now,
                          hold_until_ts=0)
            return new, [_decision(Action.FREEZE, acc, new, ["OPERATOR_FREEZE", *cap_reasons],
                                   ctx)]
        case "unfreeze":
            if acc.status is Status.HOLD_FOR_REVIEW:
                # The operator's review releases the held line; a lateness is judged at once.
                released = _release(acc, ctx)
                first = _decision(Action.RELEASE, acc, released, ["OPERATOR_UNFREEZE"], ctx)
                new, then = _evaluate(released, ctx, p, allow_up=False)
                return new, [first] if then.action is Action.HOLD else [first, then]
            if acc.status is not Status.FROZEN or acc.frozen_from is None:
                return acc, [_decision(Action.HOLD, acc, acc, ["NOT_FROZEN"], ctx)]
            # A lateness recorded while frozen is judged now, as if it had just arrived.
            late_while_frozen = acc.last_late_ts >= acc.status_since_ts > 0
            thawed = replace(acc, status=acc.frozen_from, frozen_from=None,
                             status_since_ts=ctx.now, last_change_ts=ctx.now)
            first = _decision(Action.UNFREEZE, acc, thawed, ["OPERATOR_UNFREEZE"], ctx)
            if late_while_frozen:
                ctx = replace(ctx, late=True)
            new, then = _evaluate(thawed, ctx, p, allow_up=False)
            return new, [first] if then.action is Action.HOLD else [first, then]
        case "set_limit":
            new, d = _set_limit(acc, ev, ctx, p)
            return new, [d]
        case _:
            assert_never(ev.kind)


# -- the API -------------------------------------------------------------------------------


def _stage_over(account: Account, ts: int, policy: Policy) -> bool:
    """A probation stage's observation period ended at or before ``ts`` and after the last
    evaluation: the first event after it may move the account up (once; then the repayments
    and the periodic review take over)."""
    rei = policy.reinstate
    stage = max(1, min(account.stage, rei.stages))
    end = account.status_since_ts + rei.observation_days[stage - 1] * DAY_MS
    return account.last_review_ts < end <= ts


def is_decision_point(account: Account, event: InputEvent, anomaly: float | None,
                      policy: Policy, features: FeatureState | None = None) -> bool:
    """Whether ``event`` must go through :func:`decide` (cheap; called on every event).

    Every repayment, account event and command is one, and every event of a held account; a
    transaction when its anomaly score reaches ``anomaly.trigger``, when a review is due
    (``review.interval_days`` since the last evaluation), or, given the user's ``features``
    after it, on the cheap per-transaction checks: the last hour's anomaly scores reaching
    ``hold.burst_score``, the last 24 hours' spend reaching ``hold.day_spend_share`` of the
    limit, a cash advance (``review.cash_advance``), or a spend that takes utilization across
    ``review.utilization_jump``.

    Examples
    --------
    >>> from streams.records import Transaction
    >>> from streams.settings import DEFAULT_POLICY
    >>> from policies.account import new_account
    >>> from policies.spec import load_policy
    >>> policy = load_policy(DEFAULT_POLICY)
    >>> acc = new_account(policy, 0)
    >>> tx = Transaction("e1", "u1", 86_400_000, "purchase", 100, "CNY")
    >>> is_decision_point(acc, tx, 0.1, policy), is_decision_point(acc, tx, 0.95, policy)
    (False, True)
    """
    if isinstance(event, Transaction) and account.status is not Status.HOLD_FOR_REVIEW:
        if anomaly is not None and anomaly >= policy.anomaly.trigger:
            return True
        if event.ts >= account.last_review_ts + policy.review.interval_days * DAY_MS:
            return True
        if account.status is Status.PROBATION and _stage_over(account, event.ts, policy):
            return True
        if features is None or event.kind not in ("purchase", "cash_advance"):
            return False
        if event.kind == "cash_advance" and policy.review.cash_advance:
            return True
        if burst_score(features, event.ts) >= policy.hold.burst_score:
            return True
        limit = account.limit
        share = _hold_day_share(account, event.ts, policy)
        if limit > 0 and spend_24h(features, event.ts) >= share * limit:
            return True
        jump = policy.review.utilization_jump * limit
        return limit > 0 and features.balance - event.amount < jump <= features.balance
    return True


def decide(account: Account, obs: Observation, policy: Policy) -> tuple[Account, list[Decision]]:
    """Apply the policy at a decision point: the new account and the decisions (one, or two
    when an unfreeze is followed at once by a downward move).

    Raises :class:`CommandRejected` for an operator command the policy refuses (the account is
    then unchanged).

    Examples
    --------
    >>> from streams.records import IncomeReported
    >>> from streams.settings import DEFAULT_POLICY
    >>> from policies.account import new_account
    >>> from policies.rules import neutral_features, rule_risk
    >>> from policies.spec import load_policy
    >>> policy = load_policy(DEFAULT_POLICY)
    >>> acc = new_account(policy, 0)
    >>> x = neutral_features(income_monthly=50_000)  # 500.00 a month: cap 1,500.00
    >>> ev = IncomeReported("e2", "u1", 86_400_000, 50_000, "CNY")
    >>> acc, [d] = decide(acc, Observation(ev, x, rule_risk(x, policy)), policy)
    >>> d.action.value, d.old_limit, d.new_limit, d.reasons
    ('CUT', 200000, 150000, ('INCOME_CAP',))
    """
    ev = obs.event
    income = ev.declared_income if isinstance(ev, AccountOpened) else 0
    ctx = _context(account, obs, policy, income)
    if isinstance(ev, LimitCommand):
        return _command(account, ev, ctx, policy)
    acc = _bookkeeping(account, ctx)
    if isinstance(ev, AccountClosed):
        new, d = _close(acc, ctx)
    elif isinstance(ev, AccountOpened):
        new, d = _open(acc, ev, ctx, policy)
    elif isinstance(ev, Transaction | InstallmentDue | InstallmentPaid | InstallmentOverdue
                    | IncomeReported | LiabilitiesReported):
        new, d = _evaluate(acc, ctx, policy, allow_up=True)
    else:
        assert_never(ev)
    return new, [d]
