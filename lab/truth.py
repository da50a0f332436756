"""The simulator's ground truth as the backtest reads it: who defaulted, who is a good user,
which users to plot, and the definitions of every figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from features.windows import DAY_MS

#: The monthly batch review reviews an account at each of its statements, and an account that
#: had no statement (nothing owed) this long after its last review.
CYCLE_MS: Final = 31 * DAY_MS
SPEND: Final = frozenset({"purchase", "cash_advance"})
#: Statuses on which a card can be drawn.
DRAWABLE: Final = frozenset({"ACTIVE", "PROBATION"})
STATUSES: Final = ("ACTIVE", "PROBATION", "SUSPENDED", "HOLD_FOR_REVIEW", "FROZEN", "CLOSED")
NOT_OPEN: Final = "NOT_OPEN"
#: Persona names of the simulator's ground truth (lab/simulate.py).
COLLAPSE: Final = "income_collapse"
THIN: Final = "thin_file"
RECOVERER: Final = "recovering_misser"
FRAUD: Final = "fraud_burst"
DEFAULTING: Final = frozenset({COLLAPSE, "over_indebted_drifter", "bust_out"})
PERSONA_ORDER: Final = ("steady_payer", "growing_earner", COLLAPSE, RECOVERER, FRAUD,
                        "thin_file", "seasonal_spender", "over_indebted_drifter", "bust_out",
                        "technical_late")
#: Run names, in the order the report shows them.
RUN_ORDER: Final = ("static", "monthly", "rules_only", "champion", "challenger")

DEFINITIONS: Final[Mapping[str, str]] = {
    "defaulter": "ground truth `defaults` is true: an installment is never paid and its 30 days "
                 "past due point falls inside the horizon; `default_ts` is its due date",
    "good_user": "ground truth `defaults` is false and the persona is not one that stops "
                 "paying (income_collapse, over_indebted_drifter, bust_out: their default may "
                 "fall just past the horizon): steady payers, growing earners, recovering "
                 "missers, technical lates, fraud victims, thin files, seasonal spenders",
    "ead_limit": "the run's drawable limit of a defaulter at default_ts (0 when suspended)",
    "ead_balance": "the run's balance of a defaulter at default_ts (after every event up to it)",
    "loss": "loss proxy = sum of the defaulters' balances at default_ts (loss given default "
            "100 %, nothing recovered); `balance_at_end` adds what was drawn after default",
    "credit_to_good_users": "revenue proxy: the drawable limit (0 unless ACTIVE/PROBATION) of "
                            "good users with an open account, averaged over users at the end "
                            "of each day and then over the days of the horizon",
    "wrongly_suspended": "good users ever SUSPENDED in the run",
    "wrongly_cut": "good users whose limit was ever lowered while staying drawable (a risk "
                   "cut or a cap clamp; suspensions are counted apart)",
    "time_to_suspension": "days from a user's first overdue notice (1 day past due: the first "
                          "missed payment the bank can see) to the run's suspension; 0 when "
                          "already suspended; users never suspended in the horizon are counted "
                          "as `never_suspended`, not in the median",
    "time_to_reinstatement": "recovering missers with a recovery (`recovers_ts`: their last "
                             "arrears payment) whose limit went below the one they had before "
                             "missing, or who were suspended: days from the recovery to the "
                             "time from which the account stays ACTIVE at that limit or more "
                             "until the end of the horizon (0 if restored before the "
                             "recovery); not restored by the end: `censored`. `credit_back` "
                             "is the same up to the first drawable limit",
    "fraud_spend_authorised": "purchases of fraud bursts (ground truth window) the run authorised",
    "declined": "purchases and cash advances the run declined (over the limit or not "
                "drawable): the log's, fraud-burst purchases left out (declining a fraud is "
                "not declining the customer: they are counted under `fraud`), and the "
                "purchases the simulator's own bank (the static limit) declined, which never "
                "reach the log (ground truth `declined_demand`): every run's card is offered "
                "them, so every run, static included, declines the same demand where its "
                "credit falls short; one the run authorises is spent (ledger and engine). "
                "`declined_amount_log_only` is the figure without that demand",
}


# -- ground truth ---------------------------------------------------------------------------


def load_truth(path: Path) -> dict[str, dict[str, Any]]:
    """The ground truth file (JSON Lines, one user a line), by user id."""
    out: dict[str, dict[str, Any]] = {}
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                row = orjson.loads(line)
                out[str(row["user_id"])] = row
    return out


def is_defaulter(t: Mapping[str, Any]) -> bool:
    return bool(t.get("defaults")) and t.get("default_ts") is not None


def is_good(t: Mapping[str, Any]) -> bool:
    return not t.get("defaults") and t.get("persona") not in DEFAULTING


def personas(truth: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen = {str(t.get("persona")) for t in truth.values()}
    return [p for p in PERSONA_ORDER if p in seen] + sorted(seen - set(PERSONA_ORDER))


def sample_users(truth: Mapping[str, Mapping[str, Any]], per_persona: int = 2
                 ) -> dict[str, list[str]]:
    """Users to plot, chosen from the truth alone (never from a run's outcome): per persona
    the first ones, by id, whose story the persona is about (a default, a recovery, a burst)."""
    def telling(t: Mapping[str, Any]) -> bool:
        p = t.get("persona")
        if p in DEFAULTING:
            return is_defaulter(t)
        if p == RECOVERER:
            return t.get("recovers_ts") is not None
        if p == FRAUD:
            return t.get("fraud_burst_ts") is not None
        return True

    out: dict[str, list[str]] = {}
    for p in personas(truth):
        users = sorted(u for u, t in truth.items() if t.get("persona") == p)
        chosen = [u for u in users if telling(truth[u])][:per_persona]
        chosen += [u for u in users if u not in chosen][: per_persona - len(chosen)]
        out[p] = chosen
    return out
