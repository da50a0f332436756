"""Time buckets and the exact meaning of a bucketed window.

Every rolling window is a set of integer buckets of one size ``B`` (epoch ms // ``B``, so
bucket edges are UTC-aligned). A window of ``span`` buckets evaluated at ``now_ts`` covers
the bucket holding ``now_ts`` and the ``span - 1`` buckets before it::

    counted(ts)  <=>  now_ts // B - span < ts // B <= now_ts // B
                 <=>  (now_ts // B - span + 1) * B <= ts < (now_ts // B + 1) * B

So a "24 h" window (hourly buckets, span 24) covers between 23 h and 24 h of the past: an
event at exactly ``now_ts - 24 h`` is never counted, which keeps the left edge of the nominal
interval ``(now_ts - W, now_ts]`` open; events in the first (partial) bucket-width after it
are dropped early. The layout and the worst error of each window:

=========  ==========  ====  ===================================================
window     bucket      span  covers
=========  ==========  ====  ===================================================
1 h        1 minute    60    59-60 min
24 h       1 hour      24    23-24 h
7 d        1 day       7     6-7 days
30 d       1 day       30    29-30 days
90 d       1 day       90    89-90 days (max days past due)
inflow     1 day       32    31-32 days: a month of inflow (see below)
  before   1 day       60    the 60 days before it (the inflow trend's baseline)
=========  ==========  ====  ===================================================

Inflow is the income proxy, and income mostly arrives once a month on a calendar day, 28 to
31 days apart. A 30-bucket window (29-30 days) is empty for a day or two before every pay
day that follows a 31-day month, so a steady earner would show no income and a collapsed
trend several days a year; 32 buckets always hold at least one pay day. Its baseline is the
60 buckets before it, which always hold one to three.

State keeps exactly the buckets a window evaluated at the newest event time seen can reach
(``span`` buckets per tier), so a window at any ``now_ts`` at or after the newest event is
exact under the rule above. An event older than its longest tier's horizon can never be in a
window again: it is counted in ``too_late`` instead (see :func:`features.too_late_count`).

Examples
--------
>>> now = 10 * HOUR_MS + 30 * MINUTE_MS          # 10:30
>>> in_window(bucket(now - 24 * HOUR_MS, HOUR_MS), bucket(now, HOUR_MS), HOURS_SPAN)
False
>>> in_window(bucket(11 * HOUR_MS - 24 * HOUR_MS, HOUR_MS), bucket(now, HOUR_MS), HOURS_SPAN)
True
"""

from __future__ import annotations

from typing import Final

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

#: Minute buckets kept: the 1 h window.
MINUTES_SPAN: Final = 60
#: Hour buckets kept: the 24 h window.
HOURS_SPAN: Final = 24
#: Day buckets of spend kept: the 30 d window (the 7 d window reads the newest 7).
DAYS_SPAN: Final = 30
#: Day buckets of days past due kept: the 90 d window.
LONG_SPAN: Final = 90
#: Day buckets of the "30 d" inflow window: a month, with room for the longest pay cycle.
INFLOW_SPAN: Final = 32
#: Day buckets of the inflow trend's baseline, just before the inflow window.
INFLOW_BASE_SPAN: Final = 60
#: Day buckets of inflow kept: the window and its baseline.
INFLOW_KEPT: Final = INFLOW_SPAN + INFLOW_BASE_SPAN
WEEK_SPAN: Final = 7


def bucket(ts: int, size_ms: int) -> int:
    """The bucket index of ``ts`` for buckets of ``size_ms`` (floor division, UTC-aligned).

    Examples
    --------
    >>> bucket(86_399_999, DAY_MS), bucket(86_400_000, DAY_MS)
    (0, 1)
    """
    return ts // size_ms


def in_window(b: int, now_bucket: int, span: int) -> bool:
    """Whether bucket ``b`` is inside the window of ``span`` buckets ending at ``now_bucket``.

    Examples
    --------
    >>> [in_window(b, 10, 3) for b in (7, 8, 10, 11)]
    [False, True, True, False]
    """
    return now_bucket - span < b <= now_bucket
