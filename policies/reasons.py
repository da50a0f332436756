"""Reason codes: the one registry of why a decision was taken (DESIGN §3.6).

Each code is a stable identifier (UPPER_SNAKE: downstream systems and notices key on it, so a
code is never renamed or reused), with a one-line text for the customer and a description for
the credit officer. A decision carries one to four codes, most important first, as an
adverse-action notice does. ``docs/reason-codes.md`` is :func:`render_markdown`'s output; a
test keeps the two equal.

Examples
--------
>>> customer_text("MISSED_REPAYMENTS")
'Repayments were missed on your account.'
>>> REGISTRY["HIGH_RISK_SCORE"].score_based
True
>>> is_registered("NOT_A_CODE")
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["cap", "raise", "decrease", "review_hold", "suspend", "reinstate", "hold",
               "operator", "account", "model"]

#: The order the kinds are documented in.
KINDS: Final[tuple[Kind, ...]] = ("cap", "raise", "decrease", "review_hold", "suspend",
                                  "reinstate", "hold", "operator", "account", "model")

_KIND_TITLES: Final[Mapping[Kind, str]] = {
    "cap": "Caps (limit clamped to a policy bound)",
    "raise": "Raise",
    "decrease": "Risk cut",
    "review_hold": "Line held for review (HOLD_FOR_REVIEW: available credit 0) and released",
    "suspend": "Suspension and relapse",
    "reinstate": "Reinstatement ladder",
    "hold": "Hold (evaluated, nothing changed)",
    "operator": "Operator commands",
    "account": "Account lifecycle",
    "model": "Risk source (the rules decided instead of the model)",
}


@dataclass(frozen=True, slots=True)
class ReasonCode:
    """One registered reason."""

    code: str  #: stable UPPER_SNAKE identifier
    kind: Kind  #: the group it is documented in
    customer: str  #: one line, plain words, shown to the customer
    officer: str  #: what triggered it, in policy terms, for the credit officer
    score_based: bool = False  #: the risk score drove it: the decision lists top features


_CODES: Final[tuple[ReasonCode, ...]] = (
    # -- caps ---------------------------------------------------------------------------------
    ReasonCode("MAX_LIMIT_CAP", "cap", "Your limit is at the maximum we offer.",
               "Limit clamped to limits.max_limit."),
    ReasonCode("INCOME_CAP", "cap", "Your limit is capped by your reported income.",
               "Limit clamped to limits.income_multiple_pct of the known monthly income."),
    # -- raise --------------------------------------------------------------------------------
    ReasonCode("LOW_RISK_SCORE", "raise", "Your account is in very good standing.",
               "Probability of default at or below increase.max_pd.", score_based=True),
    ReasonCode("ONTIME_HISTORY", "raise", "You have repaid on time consistently.",
               "At least increase.min_ontime_12 on-time and at most increase.max_late_12 late "
               "installments among the last 12."),
    ReasonCode("HIGH_UTILIZATION_DEMAND", "raise", "You regularly use most of your limit.",
               "30-day peak utilization at or above increase.min_utilization."),
    ReasonCode("INCOME_SUPPORTS", "raise", "Your income supports a higher limit.",
               "Monthly income known; the raised limit stays within the income cap and "
               "debt-to-income at or below increase.max_dti."),
    # -- risk cut -----------------------------------------------------------------------------
    ReasonCode("HIGH_RISK_SCORE", "decrease", "Our assessment of your repayment risk has "
               "increased.", "Probability of default at or above decrease.pd_cut.",
               score_based=True),
    ReasonCode("UTILIZATION_SPIKE_WITH_LATENESS", "decrease",
               "A late repayment while your limit was almost fully used.",
               "A late repayment arrived while utilization was at or above "
               "decrease.utilization_spike."),
    ReasonCode("INCOME_DECLINE", "decrease", "Money coming into your account has fallen.",
               "inflow_trend below decrease.income_drop_trend."),
    ReasonCode("HIGH_DEBT_TO_INCOME", "decrease", "Your debts are high relative to your income.",
               "debt_to_income above decrease.max_dti (income known)."),
    ReasonCode("CASH_ADVANCE_RELIANCE", "decrease", "Cash withdrawals have become a large "
               "part of your card use.", "cash_advance_share_30d at or above "
               "decrease.cash_advance_share while utilization is at or above "
               "decrease.cash_advance_utilization."),
    # -- line held for review -----------------------------------------------------------------
    ReasonCode("SPENDING_BURST", "review_hold", "Several unusual payments were made on your "
               "card in a short time; please confirm them with us.",
               "The anomaly scores of the last hour's spends sum to hold.burst_score or more."),
    ReasonCode("SEVERE_ANOMALY", "review_hold", "Highly unusual activity was detected on your "
               "account; please confirm it with us.",
               "One transaction's anomaly score at or above hold.anomaly_single."),
    ReasonCode("LINE_DRAWN_IN_A_DAY", "review_hold", "Most of your limit was spent within a "
               "day; please confirm these payments with us.",
               "The last 24 hours' spend reached hold.day_spend_share of the limit, at "
               "hold.day_spend_velocity times the user's daily rate or more, over at least "
               "hold.day_spend_min_count spends."),
    ReasonCode("ARREARS_HOLD", "review_hold", "A repayment is overdue; your card can be used "
               "again once it is paid.", "An installment hold.arrears_dpd days past due is "
               "unpaid: available credit held until the arrears are cleared."),
    ReasonCode("ACCOUNT_HELD", "review_hold", "Your card is on hold while we review your "
               "account.", "HOLD_FOR_REVIEW: the limit is kept, available credit is 0."),
    ReasonCode("HOLD_REVIEW_TIMEOUT", "review_hold", "The hold on your card has ended.",
               "hold.review_days passed since the anomaly hold without an operator decision: "
               "released to the status before."),
    ReasonCode("AT_MINIMUM_LIMIT", "decrease", "Your limit is already at its minimum.",
               "A cut was due but the limit is at or below limits.min_limit."),
    # -- suspension ---------------------------------------------------------------------------
    ReasonCode("SEVERE_DELINQUENCY", "suspend", "A repayment is seriously overdue.",
               "Days past due at or above suspend.dpd_days (on this event, or an arrears of "
               "that age still open)."),
    ReasonCode("MISSED_REPAYMENTS", "suspend", "Repayments were missed on your account.",
               "A missed repayment brought late installments among the last 12 to "
               "suspend.missed_count."),
    ReasonCode("VERY_HIGH_RISK_SCORE", "suspend", "Our assessment of your repayment risk is "
               "very high while a repayment is overdue.", "Probability of default at or above "
               "suspend.pd_suspend on an account in arrears (a score alone never suspends).",
               score_based=True),
    ReasonCode("LATE_IN_PROBATION", "suspend", "A repayment was late while your account was "
               "being reinstated.", "Any late repayment during PROBATION: relapse to SUSPENDED."),
    # -- reinstatement ------------------------------------------------------------------------
    ReasonCode("SUSPENSION_PERIOD_MET", "reinstate", "Your account has completed its "
               "suspension period.", "reinstate.min_suspension_days elapsed since the "
               "suspension and since the last late repayment."),
    ReasonCode("ARREARS_CLEARED", "reinstate", "Your overdue balance has been cleared.",
               "overdue_amount is 0."),
    ReasonCode("RISK_SCORE_RECOVERED", "reinstate", "Our assessment of your repayment risk has "
               "improved.", "Probability of default at or below reinstate.max_pd.",
               score_based=True),
    ReasonCode("STAGE_OBSERVATION_MET", "reinstate", "You kept your account in good order "
               "during the review period.", "Stage held reinstate.observation_days with at "
               "least reinstate.min_ontime_in_stage on-time repayments and no lateness."),
    ReasonCode("LADDER_COMPLETE", "reinstate", "Your full limit has been restored.",
               "Last probation stage completed: ACTIVE at 100 % of the pre-suspension limit."),
    ReasonCode("CUT_RESTORED_AFTER_CURE", "reinstate", "Your limit has been restored now that "
               "your account is back in good order.", "Cuts made within "
               "decrease.raise_cooldown_days of a lateness undone in one step: arrears "
               "cleared, an installment paid in full by its due date since the lateness, "
               "reinstate.min_suspension_days since it, probability of default at or below "
               "reinstate.max_pd."),
    # -- holds --------------------------------------------------------------------------------
    ReasonCode("OPERATOR_OVERRIDE_ACTIVE", "hold", "Your limit was set by our credit team.",
               "An operator set the limit above the policy caps; automatic raises wait."),
    ReasonCode("AT_MAXIMUM_LIMIT", "hold", "Your limit is at the maximum for your profile.",
               "Limit at the cap (limits.max_limit or the income cap)."),
    ReasonCode("ARREARS_OUTSTANDING", "hold", "Part of a repayment is overdue.",
               "overdue_amount above 0."),
    ReasonCode("RECENT_LATE_PAYMENT", "hold", "A recent repayment was late.",
               "Late installments above increase.max_late_12, or a late repayment within "
               "reinstate.min_suspension_days."),
    ReasonCode("RISK_TOO_HIGH_FOR_INCREASE", "hold", "Your current risk assessment does not "
               "allow a higher limit.", "Probability of default above increase.max_pd.",
               score_based=True),
    ReasonCode("RISK_SCORE_UNAVAILABLE", "hold", "Your limit was not changed while we "
               "reassess your account.", "The risk score was not a finite number: no upward "
               "move and no score-driven cut on this event."),
    ReasonCode("FEW_ONTIME_PAYMENTS", "hold", "Not enough on-time repayments yet.",
               "On-time installments among the last 12 below increase.min_ontime_12."),
    ReasonCode("ACCOUNT_TOO_NEW", "hold", "Your account is too new for a limit increase.",
               "Fewer than increase.min_days_since_open days since opening."),
    ReasonCode("LOW_UTILIZATION", "hold", "You are not using most of your current limit.",
               "30-day peak utilization below increase.min_utilization."),
    ReasonCode("INCOME_NOT_VERIFIED", "hold", "We do not have your income on file.",
               "increase.require_income and no monthly income declared or reported."),
    ReasonCode("DTI_TOO_HIGH_FOR_INCREASE", "hold", "Your debts relative to your income do not "
               "allow a higher limit.", "debt_to_income above increase.max_dti."),
    ReasonCode("INCOME_TREND_WEAK", "hold", "Money coming into your account has not been "
               "steady.", "inflow_trend below increase.min_inflow_trend."),
    ReasonCode("RECENT_LIMIT_CHANGE", "hold", "Your limit or account status changed recently.",
               "Within increase.cooldown_days of the last limit or status change."),
    ReasonCode("RECENT_LIMIT_CUT", "hold", "Your limit was reduced recently.",
               "Within decrease.raise_cooldown_days of the last cut or suspension."),
    ReasonCode("RECENT_RAISE_NO_NEW_EVIDENCE", "hold", "Your limit was raised recently.",
               "A score or debt-to-income cut within decrease.cooldown_days of a raise, "
               "without a late repayment or a hold since: not taken."),
    ReasonCode("RECENT_REVIEW_HOLD", "hold", "Your card was on hold recently.",
               "Within decrease.raise_cooldown_days of a HOLD_FOR_REVIEW: anomalous spending "
               "is not demand for a raise."),
    ReasonCode("SPEND_REVERSED", "hold", "Recent purchases were refunded or charged back.",
               "refund_ratio_30d at or above increase.max_refund_ratio: reversed spending is "
               "not demand for a raise."),
    ReasonCode("CUT_COOLDOWN", "hold", "Your limit was reviewed recently.",
               "A risk cut was due but one happened within decrease.cooldown_days."),
    ReasonCode("LIMIT_UNCHANGED", "hold", "Your limit remains unchanged.",
               "All conditions met but the step rounds to no change."),
    ReasonCode("ACCOUNT_SUSPENDED", "hold", "Your account is suspended.",
               "SUSPENDED: no spending until reinstatement."),
    ReasonCode("SUSPENSION_PERIOD_NOT_MET", "hold", "Your account is still within its "
               "suspension period.", "Less than reinstate.min_suspension_days since the "
               "suspension."),
    ReasonCode("RISK_TOO_HIGH_FOR_REINSTATEMENT", "hold", "Your current risk assessment does "
               "not allow reinstatement yet.", "Probability of default above "
               "reinstate.max_pd.", score_based=True),
    ReasonCode("STAGE_PERIOD_NOT_MET", "hold", "Your account is still in its review period.",
               "Less than reinstate.observation_days in the current probation stage."),
    ReasonCode("FEW_ONTIME_IN_STAGE", "hold", "More on-time repayments are needed.",
               "On-time repayments in the stage below reinstate.min_ontime_in_stage."),
    ReasonCode("UTILIZATION_TOO_HIGH", "hold", "You are using almost all of your current "
               "limit.", "utilization above reinstate.max_utilization."),
    ReasonCode("ACCOUNT_FROZEN", "hold", "Your account is on hold by our team.",
               "FROZEN by an operator: automatic decisions wait for the unfreeze."),
    ReasonCode("ALREADY_FROZEN", "hold", "Your account is already on hold.",
               "freeze command on a FROZEN account: nothing changed."),
    ReasonCode("NOT_FROZEN", "hold", "Your account is not on hold.",
               "unfreeze command on an account that is not FROZEN: nothing changed."),
    # -- operator -----------------------------------------------------------------------------
    ReasonCode("OPERATOR_FREEZE", "operator", "Your account was put on hold by our team.",
               "freeze command from an allowed operator."),
    ReasonCode("OPERATOR_UNFREEZE", "operator", "The hold on your account was lifted.",
               "unfreeze command from an allowed operator: back to the status before the "
               "freeze."),
    ReasonCode("OPERATOR_SET_LIMIT", "operator", "Your limit was set by our credit team.",
               "set_limit command from an allowed operator (in SUSPENDED or PROBATION it sets "
               "the pre-suspension limit the ladder restores)."),
    ReasonCode("OPERATOR_OVERRIDE_ABOVE_CAP", "operator", "Your limit was set above our "
               "standard maximum by our credit team.", "set_limit above the policy caps, "
               "allowed by operators.allow_override_above_max."),
    # -- account ------------------------------------------------------------------------------
    ReasonCode("ACCOUNT_OPENED", "account", "Your account was opened.",
               "opened event: limit set to the initial limit within the caps."),
    ReasonCode("ACCOUNT_CLOSED", "account", "Your account is closed.",
               "closed event (CLOSED is terminal, limit 0)."),
    # -- model --------------------------------------------------------------------------------
    ReasonCode("MODEL_COLD", "model", "Assessed with our standard rules.",
               "The model has not yet learnt from model.min_labels outcomes: rule score used."),
    ReasonCode("MODEL_BELOW_FLOOR", "model", "Assessed with our standard rules.",
               "Rolling model quality below model.min_auc or above model.max_log_loss: rule "
               "score used."),
    ReasonCode("MODEL_DRIFT", "model", "Assessed with our standard rules.",
               "The drift detector fired: rule score used until the model recovers."),
    ReasonCode("MODEL_FALLBACK", "model", "Assessed with our standard rules.",
               "The rule score was used instead of the model for an unregistered reason."),
)


def _index(codes: tuple[ReasonCode, ...]) -> Mapping[str, ReasonCode]:
    out: dict[str, ReasonCode] = {}
    for r in codes:
        if r.code in out:
            raise ValueError(f"duplicate reason code {r.code}")  # caught at import by tests
        out[r.code] = r
    return out


#: code -> entry, in documentation order.
REGISTRY: Final[Mapping[str, ReasonCode]] = _index(_CODES)

#: The codes a risk scorer may put in ``Risk.fallback_reason``.
FALLBACK_CODES: Final = ("MODEL_COLD", "MODEL_BELOW_FLOOR", "MODEL_DRIFT")

#: Most reasons on one decision (adverse-action notices list up to four).
MAX_REASONS: Final = 4


def is_registered(code: str) -> bool:
    return code in REGISTRY


def customer_text(code: str) -> str:
    """The customer-facing line of a registered code (``KeyError`` if unregistered).

    Examples
    --------
    >>> customer_text("ACCOUNT_FROZEN")
    'Your account is on hold by our team.'
    """
    return REGISTRY[code].customer


def officer_text(code: str) -> str:
    """The officer-facing description of a registered code.

    Examples
    --------
    >>> officer_text("MODEL_COLD").split(":")[0]
    'The model has not yet learnt from model.min_labels outcomes'
    """
    return REGISTRY[code].officer


def render_markdown() -> str:
    """The reference page ``docs/reason-codes.md``, generated from the registry.

    Examples
    --------
    >>> render_markdown().splitlines()[0]
    '# Reason codes'
    """
    lines = [
        "# Reason codes",
        "",
        "<!-- Generated from policies/reasons.py by policies.reasons.render_markdown();",
        "     tests/unit/test_reasons.py fails when this file and the registry differ. -->",
        "",
        "Every decision carries one to four of these codes, most important first. Codes are",
        "stable identifiers: a code is never renamed or reused. Codes marked *score* mean the",
        "risk score drove the decision, and the decision lists the features that pushed the",
        "score most (`top_features`). How the policy uses them (statuses, hysteresis,",
        "cooldowns, freeze) is described in `policies/decide.py`; the thresholds are in",
        "`policies/default.toml`.",
    ]
    for kind in KINDS:
        lines += ["", f"## {_KIND_TITLES[kind]}", "",
                  "| code | customer text | officer description |", "|---|---|---|"]
        for r in REGISTRY.values():
            if r.kind == kind:
                code = f"`{r.code}`" + (" *score*" if r.score_based else "")
                lines.append(f"| {code} | {r.customer} | {r.officer} |")
    return "\n".join(lines) + "\n"
