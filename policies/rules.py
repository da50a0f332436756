"""The transparent rule score: the risk input until the model is good enough.

``pd = logistic(intercept + sum(weight x (clip(x, 0, cap) - reference)))`` with the terms
declared in the policy file's ``[rules]`` section. A customer at every reference value scores
``logistic(intercept)``; each term's log-odds push away from it is its contribution, so the
score explains itself term by term.

Examples
--------
>>> from streams.settings import DEFAULT_POLICY
>>> from policies.spec import load_policy
>>> policy = load_policy(DEFAULT_POLICY)
>>> good = rule_risk(neutral_features(ontime_count_12=12), policy)
>>> bad = rule_risk(neutral_features(late_count_12=3, max_dpd_90d=35, paid_due_ratio_3=0.5),
...                 policy)
>>> good.pd < 0.05 < 0.35 < bad.pd
True
>>> bad.contributions[0]
('late_count_12', 2.4)
>>> bad.source, bad.model_version == "rules-" + policy.version[:12]
('rules', True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from features.names import FEATURE_NAMES
from policies.risk import Risk
from policies.spec import Policy

#: How many contributions a Risk carries (the shared contract of policies.risk).
TOP_CONTRIBUTIONS: Final = 5

#: A feature vector of a typical good, established customer with nothing happening: what tests
#: and examples start from. Ratios that mean "flat" or "all paid" are 1, day counters "long
#: ago" (the features cap them at 365), everything else 0.
NEUTRAL_FEATURES: Final[Mapping[str, float]] = {
    name: (1.0 if name in ("inflow_trend", "paid_due_ratio_3", "payment_ratio_3",
                         "amount_due_trend", "liabilities_trend", "spend_velocity_24h")
           else 365.0 if name in ("days_since_ontime", "days_since_missed", "days_since_open")
           else 0.0)
    for name in FEATURE_NAMES
}


def neutral_features(**overrides: float) -> dict[str, float]:
    """:data:`NEUTRAL_FEATURES` with some values replaced (``KeyError`` for unknown names).

    Examples
    --------
    >>> x = neutral_features(utilization=0.9)
    >>> x["utilization"], x["inflow_trend"], len(x) == len(FEATURE_NAMES)
    (0.9, 1.0, True)
    """
    x = dict(NEUTRAL_FEATURES)
    for k, v in overrides.items():
        if k not in x:
            raise KeyError(f"unknown feature {k!r}")
        x[k] = float(v)
    return x


def _logistic(z: float) -> float:
    # Clipped so exp() cannot overflow; |z| > 30 is already pd 1e-13 from 0 or 1.
    z = max(-30.0, min(30.0, z))
    return 1.0 / (1.0 + math.exp(-z))


def rule_risk(features: Mapping[str, float], policy: Policy) -> Risk:
    """Score ``features`` with the policy's rules.

    A missing or non-finite feature, or one whose ``requires`` feature is not positive,
    counts as its reference value (contributes nothing):
    the rule score must always answer, and a broken feature must not push the score either
    way. Contributions are log-odds, rounded to 6 decimals (stable audit bytes), the largest
    in absolute value first.

    Examples
    --------
    >>> from streams.settings import DEFAULT_POLICY
    >>> from policies.spec import load_policy
    >>> policy = load_policy(DEFAULT_POLICY)
    >>> r = rule_risk(neutral_features(utilization=0.5, debt_to_income=0.3), policy)
    >>> round(r.pd, 4), r.contributions  # every term at its reference: logistic(intercept)
    (0.0293, ())
    >>> rule_risk(neutral_features(utilization=0.9, debt_to_income=0.3), policy).contributions
    (('utilization', 0.4),)
    """
    z = policy.rules.intercept
    terms: list[tuple[str, float]] = []
    for w in policy.rules.weights:
        x = features.get(w.feature, w.reference)
        if not math.isfinite(x) or (w.requires and not features.get(w.requires, 0.0) > 0.0):
            x = w.reference
        c = w.weight * (min(max(x, 0.0), w.cap) - w.reference)
        z += c
        c = round(c, 6)
        if c != 0.0:
            terms.append((w.feature, c))
    terms.sort(key=lambda t: (-abs(t[1]), t[0]))
    return Risk(
        pd=_logistic(z),
        source="rules",
        model_version=f"rules-{policy.version[:12]}",
        contributions=tuple(terms[:TOP_CONTRIBUTIONS]),
    )
