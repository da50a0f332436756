"""Properties of the feature core over arbitrary event sequences (hypothesis).

The reference for every windowed feature is a brute-force recomputation over the raw events
with the bucket rule of :mod:`features.windows`: for ``now_ts`` at or after the newest event,
that rule is the contract, whatever the arrival order and whatever was evicted.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from features import (
    MAX_STATE_BYTES,
    FeatureConfig,
    FeatureState,
    from_dict,
    new_state,
    to_dict,
    too_late_count,
    update,
    vector,
)
from features.installments import MAX_OPEN, RESOLVED_KEPT
from features.state import DAY_FIELDS, I_DUE, I_PAID, MAX
from features.update import MAX_CATEGORIES, MAX_COUNTRIES
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
)
from streams.records import (
    AccountOpened,
    IncomeReported,
    InputEvent,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    LiabilitiesReported,
    Transaction,
    TransactionKind,
)

T0 = 1_767_225_600_000
CFG = FeatureConfig()
LIMIT = 2_000_000
CATS = [f"c{i}" for i in range(40)]
assert len({zlib.crc32(c.encode()) for c in CATS}) == len(CATS)  # no collision in the test set
COUNTRIES = ["", "", "", "CN", "US", "JP"]
IDS = [f"i{i}" for i in range(16)]
KINDS: tuple[TransactionKind, ...] = ("purchase", "purchase", "purchase", "cash_advance",
                                      "refund", "inflow")
SPAN_MS = 100 * DAY_MS

# Event times: a day in 100 (many events far out of order, some beyond every horizon; few
# distinct days, so that events meet on horizon and window edges) at an edge-prone or any time
# of that day, or packed in the last two hours (the hour and minute tiers).
_in_day = st.one_of(st.sampled_from([0, 1, MINUTE_MS - 1, MINUTE_MS, HOUR_MS - 1, HOUR_MS,
                                     DAY_MS - HOUR_MS, DAY_MS - 1]),
                    st.integers(0, DAY_MS - 1))
# Days 7, 30, 32 (inflow), 90 and 92 (inflow kept) apart: events land on the horizons of the
# newest one.
_edge_days = st.sampled_from([100, 99, 94, 93, 71, 70, 69, 68, 67, 11, 10, 9, 8, 7, 0])
times = st.one_of(
    st.builds(lambda d, t: d * DAY_MS + t, st.one_of(st.integers(0, 100), _edge_days), _in_day),
    st.integers(SPAN_MS - 2 * HOUR_MS, SPAN_MS),
).map(lambda o: T0 + o)
amounts = st.integers(1, 1_000_000)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    kind = draw(st.sampled_from(KINDS))
    spend = kind in ("purchase", "cash_advance")
    return Transaction(f"t{draw(st.integers())}", "u1", draw(times), kind, draw(amounts), "CNY",
                       draw(st.sampled_from(CATS)) if spend else "",
                       draw(st.sampled_from(COUNTRIES)) if spend else "")


@st.composite
def ghost_overdues(draw: st.DrawFn) -> InstallmentOverdue:
    return InstallmentOverdue("o", "u1", draw(times), "ghost", draw(st.integers(1, 3_650)))


@st.composite
def others(draw: st.DrawFn) -> InputEvent:
    ts, inst, amount = draw(times), draw(st.sampled_from(IDS)), draw(amounts)
    choices: list[InputEvent] = [
        InstallmentDue("d", "u1", ts, inst, amount, ts + draw(st.integers(0, 40 * DAY_MS)), "CNY"),
        InstallmentPaid("p", "u1", ts, inst, amount, "CNY"),
        InstallmentOverdue("o", "u1", ts, inst, draw(st.integers(1, 120))),
        AccountOpened("a", "u1", ts, LIMIT, "CNY", draw(st.integers(0, 10**6))),
        IncomeReported("r", "u1", ts, amount, "CNY"),
        LiabilitiesReported("l", "u1", ts, amount, "CNY"),
    ]
    return draw(st.sampled_from(choices))


@st.composite
def category_sweeps(draw: st.DrawFn) -> list[InputEvent]:
    """Up to 40 spends in distinct categories around one time: fills the category cap."""
    base, n = draw(times), draw(st.integers(30, len(CATS)))
    offsets = draw(st.lists(st.integers(-2 * DAY_MS, 2 * DAY_MS), min_size=n, max_size=n))
    return [Transaction(f"s{i}", "u1", base + off, "purchase", 10, "CNY", CATS[i], "US")
            for i, off in enumerate(offsets)]


_plain = st.lists(st.one_of(transactions(), transactions(), ghost_overdues()), max_size=80)
windowed_events = st.one_of(_plain, st.builds(lambda a, b: a + b, _plain, category_sweeps()))
any_events = st.lists(st.one_of(transactions(), transactions(), others()), max_size=80)
# now_ts at the newest event, or later (windows sliding over an idle user).
later = st.sampled_from([0, 1, MINUTE_MS, HOUR_MS, DAY_MS, 7 * DAY_MS, 29 * DAY_MS, 95 * DAY_MS])


def run(events: Sequence[InputEvent]) -> FeatureState:
    s = new_state()
    for ev in events:
        u = update(s, ev, LIMIT, CFG)
        assert u.state is s
        if u.anomaly is not None:
            assert 0.0 <= u.anomaly <= 1.0
        s = u.state
    return s


WINDOWED = (
    *(f"spend_{stat}_{w}" for w in ("1h", "24h", "7d", "30d") for stat in ("count", "sum", "max")),
    "merchant_categories_24h", "merchant_categories_30d", "cash_advance_share_30d",
    "night_share_30d", "cross_border_share_30d", "refund_ratio_30d", "inflow_30d", "inflow_trend",
    "max_dpd_90d",
)


def brute_force(events: Sequence[InputEvent], now: int) -> dict[str, float]:
    def inside(ts: int, size: int, span: int) -> bool:
        return now // size - span < ts // size <= now // size

    txs = [e for e in events if isinstance(e, Transaction)]
    spends = [e for e in txs if e.kind in ("purchase", "cash_advance")]
    out: dict[str, float] = {}
    for w, size, span in (("1h", MINUTE_MS, MINUTES_SPAN), ("24h", HOUR_MS, HOURS_SPAN),
                          ("7d", DAY_MS, 7), ("30d", DAY_MS, DAYS_SPAN)):
        xs = [e.amount for e in spends if inside(e.ts, size, span)]
        out[f"spend_count_{w}"], out[f"spend_sum_{w}"] = len(xs), sum(xs)
        out[f"spend_max_{w}"] = max(xs, default=0)
    s30 = [e for e in spends if inside(e.ts, DAY_MS, DAYS_SPAN)]
    total = sum(e.amount for e in s30)
    cats24 = {e.merchant_category for e in spends if inside(e.ts, HOUR_MS, HOURS_SPAN)}
    out["merchant_categories_24h"] = min(MAX_CATEGORIES, len(cats24))
    out["merchant_categories_30d"] = min(MAX_CATEGORIES, len({e.merchant_category for e in s30}))

    def share(sel: list[Transaction]) -> float:
        return sum(e.amount for e in sel) / total if total else 0.0

    night = [e for e in s30 if (e.ts + CFG.utc_offset_minutes * MINUTE_MS) // HOUR_MS % 24 < 6]
    out["cash_advance_share_30d"] = share([e for e in s30 if e.kind == "cash_advance"])
    out["night_share_30d"] = share(night)
    out["cross_border_share_30d"] = share([e for e in s30 if e.country not in ("", "CN")])
    refunds = sum(e.amount for e in txs if e.kind == "refund" and inside(e.ts, DAY_MS, DAYS_SPAN))
    out["refund_ratio_30d"] = min(10.0, refunds / total) if total else (10.0 if refunds else 0.0)
    inflows = [e for e in txs if e.kind == "inflow"]
    month = sum(e.amount for e in inflows if inside(e.ts, DAY_MS, INFLOW_SPAN))
    base = sum(e.amount for e in inflows if inside(e.ts, DAY_MS, INFLOW_KEPT)
               and not inside(e.ts, DAY_MS, INFLOW_SPAN))
    out["inflow_30d"] = month
    history_days = now // DAY_MS - min(e.ts for e in events) // DAY_MS + 1 if events else 0
    if history_days < INFLOW_KEPT or month + base == 0:
        out["inflow_trend"] = 1.0
    elif base == 0:
        out["inflow_trend"] = 10.0
    else:
        out["inflow_trend"] = min(10.0, (month / INFLOW_SPAN) / (base / INFLOW_BASE_SPAN))
    out["max_dpd_90d"] = max((e.days_past_due for e in events if isinstance(e, InstallmentOverdue)
                              and inside(e.ts, DAY_MS, LONG_SPAN)), default=0)
    return out


def brute_too_late(events: Sequence[InputEvent]) -> int:
    newest, late = 0, 0
    for e in events:
        newest = max(newest, e.ts)
        horizon = (LONG_SPAN if not isinstance(e, Transaction)
                   else INFLOW_KEPT if e.kind == "inflow" else DAYS_SPAN)
        late += e.ts // DAY_MS <= newest // DAY_MS - horizon
    return late


def close(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(math.isclose(a[k], b[k], rel_tol=1e-12, abs_tol=1e-12) for k in WINDOWED)


@settings(max_examples=150, deadline=None)
@given(windowed_events, later)
def test_windowed_features_equal_brute_force(events: list[InputEvent], delta: int) -> None:
    s = run(events)
    now = max((e.ts for e in events), default=T0) + delta
    assert close(vector(s, now, LIMIT), brute_force(events, now))
    assert too_late_count(s) == brute_too_late(events)


@settings(max_examples=100, deadline=None)
@given(windowed_events, st.randoms(use_true_random=False), later)
def test_arrival_order_does_not_change_windows(events: list[InputEvent], rnd: random.Random,
                                                delta: int) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    now = max((e.ts for e in events), default=T0) + delta
    a, b = run(events), run(shuffled)
    va, vb = vector(a, now, LIMIT), vector(b, now, LIMIT)
    assert all(math.isclose(va[k], vb[k], rel_tol=1e-12) for k in WINDOWED)
    in_order = run(sorted(events, key=lambda e: e.ts))
    assert too_late_count(in_order) == 0


@settings(max_examples=150, deadline=None)
@given(any_events, later)
def test_state_stays_bounded_and_non_negative(events: list[InputEvent], delta: int) -> None:
    s = run(events)
    assert len(s.minutes) <= MINUTES_SPAN and len(s.hours) <= HOURS_SPAN
    assert len(s.days) <= DAYS_SPAN and len(s.util_peaks) <= DAYS_SPAN
    assert len(s.inflow) <= INFLOW_KEPT and len(s.dpd) <= LONG_SPAN
    assert len(s.categories) <= MAX_CATEGORIES and len(s.countries) <= MAX_COUNTRIES
    open_ = [r for r in s.installments.values() if r[I_PAID] < r[I_DUE]]
    assert len(open_) <= MAX_OPEN and len(s.installments) - len(open_) <= RESOLVED_KEPT
    assert len(orjson.dumps(to_dict(s))) <= MAX_STATE_BYTES
    for buckets in (s.minutes, s.hours, s.days):
        assert all(x >= 0 for b in buckets.values() for x in b)
    expected_totals = [sum(b[i] for b in s.days.values()) if i != MAX else 0
                       for i in range(DAY_FIELDS)]
    assert s.totals == expected_totals
    assert s.balance >= 0 and s.too_late >= 0
    assert all(v > 0 for v in (*s.inflow.values(), *s.dpd.values()))
    now = max((e.ts for e in events), default=T0) + delta
    v = vector(s, now, LIMIT)
    assert all(math.isfinite(x) and x >= 0 for x in v.values())
    assert 0.0 <= v["anomaly_score"] <= 1.0


@settings(max_examples=150, deadline=None)
@given(any_events, st.integers(0, 80))
def test_round_trip_anywhere_changes_nothing(events: list[InputEvent], cut: int) -> None:
    straight = run(events)
    s = run(events[:cut])
    restored = from_dict(orjson.loads(orjson.dumps(to_dict(s))))
    assert restored == s
    for ev in events[cut:]:
        restored = update(restored, ev, LIMIT, CFG).state
    assert restored == straight
    assert orjson.dumps(to_dict(restored)) == orjson.dumps(to_dict(straight))
