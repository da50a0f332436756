"""The feature vector at a decision point: :data:`~features.names.FEATURE_NAMES`, in order.

Windows follow :mod:`features.windows` (bucketed, evaluated at ``now_ts``, exact for any
``now_ts`` at or after the newest event seen; for an earlier ``now_ts``, buckets newer than it
are left out and the oldest may already be gone). Every value is a finite float. Ratios
whose denominator is 0, or that could explode, are defined and capped at :data:`RATIO_CAP`:

* ``spend_velocity_24h`` = 24 h spend / (30 d spend / D), 0 without 30 d spend. ``D`` is 30,
  or the days of history the user has (since opening or the first event) when fewer, so that
  a new user who spends evenly gets about 1, not 30.
* ``inflow_30d`` is a month of inflow: 32 daily buckets, so that a monthly pay day is always
  inside it (:mod:`features.windows`). ``inflow_trend`` = (``inflow_30d`` / 32) / (inflow of
  the 60 days before it / 60), daily rates; 1.0 (no evidence) until the user has a full
  60-day baseline or when there was no inflow at all; :data:`RATIO_CAP` when inflow appears
  after a baseline without any. A shorter baseline is not used: it holds one pay day or two
  depending on the calendar, and the rate it gave made every new monthly earner look like an
  income drop at about day 60 (the backtest's largest cause of good users cut).
* ``refund_ratio_30d``: refunds / spend; :data:`RATIO_CAP` when refunds come without spend.
* ``debt_to_income``: (liabilities + the line's monthly obligation) / income, the obligation
  being the mean amount due of the :data:`~features.installments.RATIO_LAST` latest
  installments issued (:func:`~features.installments.monthly_obligation`): smoothed over the
  statement cycles, so it does not swing from "all paid" after a payment to "all due" at the
  next statement (which made raises and cuts alternate). 0 when nothing is owed,
  :data:`RATIO_CAP` when something is owed and income is 0.
* ``liabilities_trend``: the latest liabilities report / the report before it (by event
  time), however far apart: debt elsewhere rising report after report is how an
  over-indebted customer drifts towards default. 1.0 (flat) before a second report or when
  the two are equal (both 0 included); :data:`RATIO_CAP` when debt appears where there was
  none.
* ``utilization``: balance / ``limit`` (capped at 10, also for a 0 limit with a balance);
  ``utilization_peak_30d``: the largest utilization over the 30 d window, now included
  (per day: before and after each balance change or :func:`~features.update.observe_limit`).
* ``merchant_categories_*``: exact up to 32 (crc32 collisions aside), then 32.
* ``ontime_count_12`` / ``late_count_12``: among the 12 latest resolved installments
  (:mod:`features.installments`); ``paid_due_ratio_3``: see
  :func:`~features.installments.paid_due_ratio`; ``overdue_amount``: unpaid amount of
  installments whose ``due_ts`` < ``now_ts``.
* ``payment_ratio_3`` / ``min_payments_3``: how the customer repays, over the same 3
  installments as ``paid_due_ratio_3`` (:func:`~features.installments.payment_behaviour`):
  paid / due with payments *not* capped at the amount due (a transactor clearing the
  statement balance reads its multiple of the minimum, a minimum payer 1.0; capped at
  :data:`RATIO_CAP`; 1.0 when none is due), and how many were paid exactly their amount due.
* ``amount_due_trend``: the latest statement's amount due / the one 3 statements before
  (:func:`~features.installments.amount_due_trend`): a minimum due is a share of the
  balance, so a balance carried and growing reads above 1. 1.0 with fewer than 4 statements;
  capped at :data:`RATIO_CAP`.
* ``max_dpd_90d``: the largest days past due of an overdue notice or a late full payment in
  the 90 d window.
* ``days_since_ontime`` / ``days_since_missed``: whole days since the latest full payment by
  the due date / the latest overdue notice or late full payment; 365 if never or longer ago.
* ``days_since_open``: whole days since ``opened`` (or the first event seen, without one).
* ``anomaly_score``: of the spend with the latest ``ts`` (:mod:`features.anomaly`).
* ``anomaly_burst_1h``: the sum of the anomaly scores of the spends of the last 60 minutes
  (:func:`burst_score`): a burst of unusual spends adds up even as each one makes the next
  look less unusual.

Examples
--------
>>> from features.state import new_state
>>> v = vector(new_state(), 1_767_225_600_000, 10_000)
>>> list(v) == list(FEATURE_NAMES)
True
>>> v["paid_due_ratio_3"], v["days_since_ontime"], v["inflow_trend"]
(1.0, 365.0, 1.0)
"""

from __future__ import annotations

from typing import Final

from features.anomaly import SCALE
from features.installments import (
    amount_due_trend,
    monthly_obligation,
    paid_due_ratio,
    payment_behaviour,
    repayment_counts,
    unpaid_due_by,
)
from features.names import FEATURE_NAMES
from features.state import CASH, MAX, NIGHT, REFUND, SUM, XB, FeatureState, N
from features.update import BP, utilization_bp
from features.windows import (
    DAY_MS,
    DAYS_SPAN,
    HOUR_MS,
    HOURS_SPAN,
    INFLOW_BASE_SPAN,
    INFLOW_KEPT,
    INFLOW_SPAN,
    LONG_SPAN,
    MINUTE_MS,
    MINUTES_SPAN,
    WEEK_SPAN,
)

#: Upper bound of every ratio that has no natural one.
RATIO_CAP: Final = 10.0
#: "days since" features are capped here, and take this value when the thing never happened.
DAYS_SINCE_CAP: Final = 365


def spend_24h(state: FeatureState, now_ts: int) -> int:
    """The spend of the 24 hours up to ``now_ts`` (``spend_sum_24h`` without the vector).

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state(); s.hours = {0: [1, 500, 500], 30: [2, 900, 600]}
    >>> spend_24h(s, 30 * HOUR_MS)
    900
    """
    return _spend3(state.hours, now_ts // HOUR_MS, HOURS_SPAN)[1]


def burst_score(state: FeatureState, now_ts: int) -> float:
    """The sum of the anomaly scores of the spends in the 60 minutes up to ``now_ts``.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state(); s.burst = {0: 6_000, 1: 5_000}
    >>> burst_score(s, 2 * MINUTE_MS), burst_score(s, 60 * MINUTE_MS)
    (1.1, 0.5)
    """
    nm = now_ts // MINUTE_MS
    lo = nm - MINUTES_SPAN
    return sum(v for k, v in state.burst.items() if lo < k <= nm) / SCALE


def _spend3(buckets: dict[int, list[int]], now: int, span: int) -> tuple[int, int, int]:
    n = s = x = 0
    lo = now - span
    for k, b in buckets.items():
        if lo < k <= now:
            n += b[0]
            s += b[1]
            if b[2] > x:
                x = b[2]
    return n, s, x


def _days_since(ts: int, now_ts: int) -> float:
    if ts == 0:
        return float(DAYS_SINCE_CAP)
    return float(min(DAYS_SINCE_CAP, max(0, (now_ts - ts) // DAY_MS)))


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return 0.0 if num <= 0 else RATIO_CAP
    return min(RATIO_CAP, num / den)


def vector(state: FeatureState, now_ts: int, limit: int) -> dict[str, float]:
    """The features of ``state`` at ``now_ts`` for a credit limit ``limit``.

    Examples
    --------
    >>> from features.state import new_state
    >>> from features.update import FeatureConfig, update
    >>> from streams.records import Transaction
    >>> s, cfg, t0 = new_state(), FeatureConfig(), 1_767_225_600_000
    >>> for i, amount in enumerate((1_000, 3_000)):
    ...     s = update(s, Transaction(f"e{i}", "u", t0 + i * 60_000, "purchase", amount, "CNY",
    ...                               "5411", ""), 10_000, cfg).state
    >>> v = vector(s, t0 + 120_000, 10_000)
    >>> v["spend_count_1h"], v["spend_sum_24h"], v["spend_max_30d"], v["utilization"]
    (2.0, 4000.0, 3000.0, 0.4)
    >>> vector(s, t0 + 3_660_000, 10_000)["spend_count_1h"]   # 1 h after the second spend
    0.0
    """
    s = state
    nm, nh, nd = now_ts // MINUTE_MS, now_ts // HOUR_MS, now_ts // DAY_MS
    out: dict[str, float] = {}

    c1, s1, x1 = _spend3(s.minutes, nm, MINUTES_SPAN)
    c24, s24, x24 = _spend3(s.hours, nh, HOURS_SPAN)
    c7 = s7 = x7 = 0
    d30 = [0] * 7
    for k, b in s.days.items():
        if nd - DAYS_SPAN < k <= nd:
            for i in (N, SUM, CASH, NIGHT, XB, REFUND):
                d30[i] += b[i]
            if b[MAX] > d30[MAX]:
                d30[MAX] = b[MAX]
            if k > nd - WEEK_SPAN:
                c7 += b[N]
                s7 += b[SUM]
                if b[MAX] > x7:
                    x7 = b[MAX]
    for w, (c, sm, x) in (("1h", (c1, s1, x1)), ("24h", (c24, s24, x24)), ("7d", (c7, s7, x7)),
                          ("30d", (d30[N], d30[SUM], d30[MAX]))):
        out[f"spend_count_{w}"] = float(c)
        out[f"spend_sum_{w}"] = float(sm)
        out[f"spend_max_{w}"] = float(x)

    known = [t for t in (s.open_ts, s.first_ts) if t]
    start = min(known) if known else now_ts
    history_days = max(0, nd - start // DAY_MS + 1)  # days with any history, today included
    spend30 = d30[SUM]
    if spend30 > 0:
        days = min(DAYS_SPAN, max(1, history_days))
        # At most ``days`` by construction (24 h spend <= 30 d spend); min() guards the
        # now_ts < newest case, where the tiers may disagree.
        out["spend_velocity_24h"] = min(float(days), s24 * days / spend30)
    else:
        out["spend_velocity_24h"] = 0.0
    out["merchant_categories_24h"] = float(
        sum(1 for h in s.categories.values() if nh - HOURS_SPAN < h <= nh))
    out["merchant_categories_30d"] = float(
        sum(1 for h in s.categories.values() if nd - DAYS_SPAN < h // 24 <= nd))
    out["cash_advance_share_30d"] = d30[CASH] / spend30 if spend30 > 0 else 0.0
    out["night_share_30d"] = d30[NIGHT] / spend30 if spend30 > 0 else 0.0
    out["cross_border_share_30d"] = d30[XB] / spend30 if spend30 > 0 else 0.0
    out["refund_ratio_30d"] = _ratio(d30[REFUND], spend30)

    month = base = 0
    for k, v in s.inflow.items():
        if nd - INFLOW_SPAN < k <= nd:
            month += v
        elif nd - INFLOW_KEPT < k <= nd - INFLOW_SPAN:
            base += v
    out["inflow_30d"] = float(month)
    if history_days - INFLOW_SPAN < INFLOW_BASE_SPAN or month + base == 0:
        out["inflow_trend"] = 1.0
    else:
        out["inflow_trend"] = _ratio(month / INFLOW_SPAN, base / INFLOW_BASE_SPAN)

    out["income_monthly"] = float(s.income)
    out["liabilities_monthly"] = float(s.liabilities)
    if s.prev_liabilities_ts == 0 or s.liabilities == s.prev_liabilities:
        out["liabilities_trend"] = 1.0
    else:
        out["liabilities_trend"] = _ratio(s.liabilities, s.prev_liabilities)
    out["debt_to_income"] = _ratio(s.liabilities + monthly_obligation(s, now_ts), s.income)
    out["balance"] = float(s.balance)
    util_now = utilization_bp(s.balance, limit) / BP if limit <= 0 else min(
        RATIO_CAP, s.balance / limit)
    out["utilization"] = util_now
    peak = util_now
    for d, bp in s.util_peaks:
        if nd - DAYS_SPAN < d <= nd and bp / BP > peak:
            peak = bp / BP
    out["utilization_peak_30d"] = peak

    ontime, late = repayment_counts(s)
    out["ontime_count_12"] = float(ontime)
    out["late_count_12"] = float(late)
    out["max_dpd_90d"] = float(
        max((v for k, v in s.dpd.items() if nd - LONG_SPAN < k <= nd), default=0))
    out["days_since_ontime"] = _days_since(s.ontime_ts, now_ts)
    out["days_since_missed"] = _days_since(s.missed_ts, now_ts)
    out["paid_due_ratio_3"] = paid_due_ratio(s, now_ts)
    ratio, minimum = payment_behaviour(s, now_ts, RATIO_CAP)
    out["payment_ratio_3"] = ratio
    out["min_payments_3"] = float(minimum)
    out["amount_due_trend"] = amount_due_trend(s, RATIO_CAP)
    out["overdue_amount"] = float(unpaid_due_by(s, now_ts, strict=True))
    out["days_since_open"] = float(max(0, (now_ts - start) // DAY_MS))
    out["anomaly_score"] = s.anomaly / SCALE
    out["anomaly_burst_1h"] = burst_score(s, now_ts)
    return {name: out[name] for name in FEATURE_NAMES}
