"""The feature vector's names, listed once: the model, the policy, the audit trail and the
README table all read them from here. Money features are in minor units (as floats, since the
vector feeds the model); durations in days; shares and ratios are unitless."""

from __future__ import annotations

import hashlib
from typing import Final

WINDOWS: Final = ("1h", "24h", "7d", "30d")

FEATURE_NAMES: Final[tuple[str, ...]] = (
    *(f"spend_{stat}_{w}" for w in WINDOWS for stat in ("count", "sum", "max")),
    "spend_velocity_24h",  # 24 h spend / (30 d spend / 30)
    "merchant_categories_24h",
    "merchant_categories_30d",
    "cash_advance_share_30d",  # cash advances / all spend, by amount
    "night_share_30d",  # spend between 00:00 and 06:00 local / all spend, by amount
    "cross_border_share_30d",  # spend outside the home country / all spend, by amount
    "refund_ratio_30d",  # refunds / spend, by amount
    "inflow_30d",  # a month of inflow: 32 daily buckets, so it always holds a monthly pay day
    "inflow_trend",  # (inflow_30d / 32) / (inflow of the 60 days before it / 60); 1.0 = flat
    "income_monthly",  # latest reported (or declared) monthly income
    "liabilities_monthly",  # latest reported monthly debt service elsewhere
    "liabilities_trend",  # latest liabilities report / the one before it (1.0 = flat)
    "debt_to_income",  # (liabilities + mean of the last 3 installments) / income
    "balance",  # outstanding balance on the credit line
    "utilization",  # balance / limit (0 when the limit is 0 and nothing is owed)
    "utilization_peak_30d",
    "ontime_count_12",  # of the last 12 resolved installments
    "late_count_12",
    "max_dpd_90d",
    "days_since_ontime",  # capped at 365 (also when never)
    "days_since_missed",  # capped at 365 (also when never)
    "paid_due_ratio_3",  # paid / due over the last 3 installments (1.0 when none)
    "payment_ratio_3",  # the same, payments not capped at the amount due (1.0 = minimum)
    "min_payments_3",  # of the last 3 installments, those paid exactly the amount due
    "amount_due_trend",  # latest amount due / the one 3 statements before (1.0 = flat)
    "overdue_amount",  # unpaid amount of installments past their due date
    "days_since_open",
    "anomaly_score",  # of the latest transaction, 0..1
    "anomaly_burst_1h",  # sum of the anomaly scores of the last hour's spends
)

#: Names the feature set (a hash of the names, in order): a model snapshot carries the set it
#: was learnt on, and a worker whose code computes another set refuses it rather than score
#: vectors whose features the weights do not describe (policies/snapshot.py).
FEATURE_SET: Final = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:12]
