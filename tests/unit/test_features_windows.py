"""Windowed spend, inflow and share features against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from features import FeatureConfig, FeatureState, new_state, too_late_count, update, vector
from features.update import MAX_CATEGORIES
from features.vector import RATIO_CAP
from features.windows import DAY_MS, HOUR_MS, MINUTE_MS
from streams.records import AccountOpened, InputEvent, Transaction, TransactionKind

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a day edge
LIMIT = 100_000
CFG = FeatureConfig()


def tx(ts: int, amount: int, kind: TransactionKind = "purchase", cat: str = "5411",
       country: str = "") -> Transaction:
    return Transaction(f"e{ts}-{amount}-{kind}", "u1", ts, kind, amount, "CNY",
                       cat if kind in ("purchase", "cash_advance") else "", country)


def run(events: list[InputEvent], state: FeatureState | None = None,
        cfg: FeatureConfig = CFG) -> FeatureState:
    s = state if state is not None else new_state()
    for ev in events:
        s = update(s, ev, LIMIT, cfg).state
    return s


def test_spend_windows_hand_computed() -> None:
    now = T0 + 40 * DAY_MS + 12 * HOUR_MS
    s = run([
        tx(now - 40 * DAY_MS, 5_000),  # out of every window (evicted on the way)
        tx(now - 10 * DAY_MS, 900),  # 30 d only
        tx(now - 2 * DAY_MS, 700),  # 7 d and 30 d
        tx(now - 3 * HOUR_MS, 500),  # 24 h and up
        tx(now - 50 * MINUTE_MS, 300),  # 1 h and up
        tx(now - 10 * MINUTE_MS, 100),
    ])
    v = vector(s, now, LIMIT)
    got = {w: (v[f"spend_count_{w}"], v[f"spend_sum_{w}"], v[f"spend_max_{w}"])
           for w in ("1h", "24h", "7d", "30d")}
    assert got == {"1h": (2, 400, 300), "24h": (3, 900, 500), "7d": (4, 1_600, 700),
                   "30d": (5, 2_500, 900)}
    assert s.balance == 7_500  # the evicted spend is still owed
    assert too_late_count(s) == 0


# (window name, bucket size, buckets in the window)
WINDOWS = [("1h", MINUTE_MS, 60), ("24h", HOUR_MS, 24), ("7d", DAY_MS, 7), ("30d", DAY_MS, 30)]


@pytest.mark.parametrize(("name", "size", "span"), WINDOWS)
@pytest.mark.parametrize("now", [T0 + 50 * DAY_MS,  # on every bucket edge
                                 T0 + 50 * DAY_MS + 7 * HOUR_MS + 31 * MINUTE_MS + 15_007])
def test_window_edges(name: str, size: int, span: int, now: int) -> None:
    first_in = (now // size - span + 1) * size  # first ms of the oldest bucket in the window
    cases = [(now - span * size, 0), (first_in - 1, 0), (first_in, 1), (now, 1)]
    for ts, expected in cases:
        s = run([tx(ts, 1_000)])
        assert vector(s, now, LIMIT)[f"spend_count_{name}"] == expected, (ts - now)


def test_exact_boundary_event_is_out_on_aligned_now() -> None:
    now = T0 + 3 * DAY_MS  # aligned: the window is exactly (now - 24 h, now] on hour edges
    s = run([tx(now - 24 * HOUR_MS, 1_000), tx(now - 24 * HOUR_MS + HOUR_MS, 2_000)])
    v = vector(s, now, LIMIT)
    assert (v["spend_count_24h"], v["spend_sum_24h"]) == (1, 2_000)


def test_late_events_land_in_their_bucket() -> None:
    now = T0 + 40 * DAY_MS
    s = run([tx(now, 100), tx(now - 2 * HOUR_MS, 200)])  # 2 h late
    v = vector(s, now, LIMIT)
    assert (v["spend_count_1h"], v["spend_count_24h"], v["spend_sum_24h"]) == (1, 2, 300)
    s = run([tx(now - 29 * DAY_MS, 400)], s)  # late but inside the 30 d horizon
    v = vector(s, now, LIMIT)
    assert (v["spend_count_7d"], v["spend_count_30d"], v["spend_sum_30d"]) == (2, 3, 700)
    assert too_late_count(s) == 0
    s = run([tx(now - 31 * DAY_MS, 800)], s)  # beyond the horizon
    v = vector(s, now, LIMIT)
    assert (v["spend_count_30d"], too_late_count(s), s.balance) == (3, 1, 1_500)


def test_too_late_refund_and_inflow() -> None:
    now = T0 + 100 * DAY_MS
    s = run([tx(now, 100), tx(now - 31 * DAY_MS, 50, "refund"), tx(now - 60 * DAY_MS, 70, "inflow"),
             tx(now - 91 * DAY_MS, 91, "inflow"), tx(now - 92 * DAY_MS, 92, "inflow")])
    assert too_late_count(s) == 2  # the refund (30 d horizon) and the 92-day-old inflow
    assert s.balance == 50  # the refund still lowers the balance
    assert s.inflow == {(now - 60 * DAY_MS) // DAY_MS: 70, (now - 91 * DAY_MS) // DAY_MS: 91}


def test_horizons_evict_buckets() -> None:
    s = run([tx(T0, 100), tx(T0 + HOUR_MS, 50, "inflow"), tx(T0 + 35 * DAY_MS, 60, "inflow")])
    assert (s.minutes, s.hours, s.days, s.util_peaks) == ({}, {}, {}, [])
    assert len(s.inflow) == 2
    assert s.categories == {}
    s = run([tx(T0 + 91 * DAY_MS, 10, "inflow")], s)
    assert len(s.inflow) == 3  # inflow is kept 92 days: the month and its 60-day baseline
    s = run([tx(T0 + 92 * DAY_MS, 10, "inflow")], s)
    assert sorted(s.inflow) == [(T0 + d * DAY_MS) // DAY_MS for d in (35, 91, 92)]


def test_velocity_full_and_thin_history() -> None:
    now = T0 + 40 * DAY_MS + 12 * HOUR_MS
    opened = AccountOpened("o", "u1", T0, LIMIT, "CNY")
    s = run([opened, *(tx(now - d * DAY_MS, 100) for d in range(11, 21)), tx(now, 300)])
    assert vector(s, now, LIMIT)["spend_velocity_24h"] == pytest.approx(300 / (1_300 / 30))
    thin = run([AccountOpened("o", "u1", now - HOUR_MS, LIMIT, "CNY"), tx(now, 300)])
    assert vector(thin, now, LIMIT)["spend_velocity_24h"] == 1.0  # not 30: one day of history
    assert vector(new_state(), now, LIMIT)["spend_velocity_24h"] == 0.0


def test_merchant_categories_distinct_and_capped() -> None:
    now = T0 + 40 * DAY_MS
    s = run([tx(now - 10 * DAY_MS, 1, cat="a"), tx(now - 10 * DAY_MS, 1, cat="b"),
             tx(now - HOUR_MS, 1, cat="c"), tx(now, 1, cat="d"), tx(now, 2, cat="d"),
             tx(now, 3, cat="a"), tx(now, 4, cat="")])
    v = vector(s, now, LIMIT)
    assert (v["merchant_categories_24h"], v["merchant_categories_30d"]) == (3, 4)
    many = run([tx(now + i, 10, cat=f"m{i}") for i in range(40)])
    v = vector(many, now + 40, LIMIT)
    assert v["merchant_categories_24h"] == v["merchant_categories_30d"] == MAX_CATEGORIES


def test_shares_by_amount() -> None:
    day = T0 + 5 * DAY_MS
    events: list[InputEvent] = [
        tx(day + 3 * HOUR_MS, 1_000),  # 11:00 in UTC+8: day time, home
        tx(day + 17 * HOUR_MS, 600, "cash_advance", country="CN"),  # 01:00 local
        tx(day + 20 * HOUR_MS, 400, country="US"),  # 04:00 local, abroad
    ]
    v = vector(run(events), day + 21 * HOUR_MS, LIMIT)
    assert v["cash_advance_share_30d"] == pytest.approx(0.3)
    assert v["night_share_30d"] == pytest.approx(0.5)
    assert v["cross_border_share_30d"] == pytest.approx(0.2)
    utc_us = FeatureConfig(home_country="US", utc_offset_minutes=0)
    v = vector(run(events, cfg=utc_us), day + 21 * HOUR_MS, LIMIT)
    assert v["night_share_30d"] == pytest.approx(0.5)  # 03:00 UTC only
    assert v["cross_border_share_30d"] == pytest.approx(0.3)  # the CN cash advance


def test_refund_ratio_and_balance_floor() -> None:
    now = T0 + DAY_MS
    s = run([tx(now, 1_000), tx(now, 300, "refund")])
    assert (s.balance, vector(s, now, LIMIT)["refund_ratio_30d"]) == (700, 0.3)
    s = run([tx(now, 5_000, "refund")], s)
    assert s.balance == 0
    assert vector(s, now, LIMIT)["refund_ratio_30d"] == pytest.approx(5.3)
    only_refunds = run([tx(now, 10, "refund")])
    assert vector(only_refunds, now, LIMIT)["refund_ratio_30d"] == RATIO_CAP


def test_inflow_30d_and_trend() -> None:
    now = T0 + 95 * DAY_MS + HOUR_MS
    inflows = [tx(T0 + d * DAY_MS, a, "inflow") for d, a in ((3, 600), (40, 300), (70, 300))]
    s = run([AccountOpened("o", "u1", T0, LIMIT, "CNY"), *inflows])
    v = vector(s, now, LIMIT)
    # The month = days (63, 95]: 300; its baseline = days (3, 63]: 300; day 3 is just out.
    assert (v["inflow_30d"], v["inflow_trend"]) == (300, pytest.approx(60 / 32))
    assert s.balance == 0
    # 76 days of history: no full 60-day baseline yet, so no evidence either way.
    mid = run([AccountOpened("o", "u1", T0 + 20 * DAY_MS, LIMIT, "CNY"), *inflows[1:]])
    assert vector(mid, now, LIMIT)["inflow_trend"] == 1.0
    dried = run([AccountOpened("o", "u1", T0, LIMIT, "CNY"), inflows[1]])
    assert vector(dried, now, LIMIT)["inflow_trend"] == 0.0
    fresh = run([AccountOpened("o", "u1", T0, LIMIT, "CNY"), inflows[2]])
    assert vector(fresh, now, LIMIT)["inflow_trend"] == RATIO_CAP  # inflow after none at all


@pytest.mark.parametrize("pay_day", [1, 15, 28])
def test_a_monthly_salary_is_always_in_the_month_and_never_a_decline(pay_day: int) -> None:
    # Paid on the same calendar day of every month (28 to 31 days apart), 10:00 UTC, for two
    # years: every day after the first full baseline, at any hour, the month's window holds a
    # pay day and the trend stays at or above 1/32 / (3/60) = 0.625 (three pay days fit in a
    # 60-day baseline only across February).
    salary = 500_000
    start = datetime(2026, 1, 1, tzinfo=UTC)
    paydays = [datetime(2026 + m // 12, m % 12 + 1, pay_day, 10, tzinfo=UTC) for m in range(24)]
    s = run([AccountOpened("o", "u1", int(start.timestamp() * 1000), LIMIT, "CNY")])
    lowest = RATIO_CAP
    for day in range(95, 700):
        for hour in (0, 9, 11, 23):
            now = start + timedelta(days=day, hours=hour)
            paid = [p for p in paydays if p <= now]
            s = run([tx(int(p.timestamp() * 1000), salary, "inflow") for p in paid
                     if int(p.timestamp() * 1000) > s.last_ts], s)
            v = vector(s, int(now.timestamp() * 1000), LIMIT)
            assert v["inflow_30d"] >= salary, now
            lowest = min(lowest, v["inflow_trend"])
    assert lowest == pytest.approx(0.625)
