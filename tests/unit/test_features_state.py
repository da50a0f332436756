"""State lifecycle: in-place update, serialization, size bound, vector shape."""

from __future__ import annotations

import math
from dataclasses import fields

import orjson
import pytest

from features import (
    MAX_STATE_BYTES,
    FeatureConfig,
    clone,
    from_dict,
    new_state,
    to_dict,
    update,
    vector,
)
from features.installments import MAX_OPEN, RESOLVED_KEPT
from features.names import FEATURE_NAMES
from features.state import DAY_FIELDS, FeatureState
from features.update import MAX_CATEGORIES, MAX_COUNTRIES
from features.vector import RATIO_CAP
from features.windows import (
    DAY_MS,
    DAYS_SPAN,
    HOURS_SPAN,
    INFLOW_KEPT,
    LONG_SPAN,
    MINUTES_SPAN,
)
from streams.records import (
    AccountOpened,
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
KINDS: tuple[TransactionKind, ...] = ("purchase", "cash_advance", "refund", "inflow")


def rich_state() -> FeatureState:
    events: list[InputEvent] = [AccountOpened("o", "u1", T0, 50_000, "CNY", 9_000)]
    for i in range(200):
        ts = T0 + i * 3 * 3_600_000 + i * 7
        kind: TransactionKind = KINDS[i % 4]
        events.append(Transaction(f"t{i}", "u1", ts, kind, 100 + i, "CNY",
                                  f"c{i % 9}", ("", "US", "JP", "CN")[i % 4]))
    events += [InstallmentDue("d1", "u1", T0, "i1", 5_000, T0 + 10 * DAY_MS, "CNY"),
               InstallmentOverdue("od", "u1", T0 + 12 * DAY_MS, "i1", 2),
               InstallmentPaid("p1", "u1", T0 + 13 * DAY_MS, "i1", 5_000, "CNY"),
               InstallmentDue("d2", "u1", T0, "i2", 5_000, T0 + 40 * DAY_MS, "CNY"),
               LiabilitiesReported("l1", "u1", T0 + DAY_MS, 40_000, "CNY"),
               LiabilitiesReported("l2", "u1", T0 + 20 * DAY_MS, 60_000, "CNY")]
    s = new_state()
    for ev in sorted(events, key=lambda e: e.ts):
        s = update(s, ev, 50_000, CFG).state
    return s


def test_update_consumes_and_returns_the_same_object() -> None:
    s = new_state()
    u = update(s, Transaction("e", "u1", T0, "purchase", 5, "CNY"), 100, CFG)
    assert u.state is s and s.balance == 5


def test_round_trip_is_exact_and_evolves_identically() -> None:
    s = rich_state()
    blob = orjson.dumps(to_dict(s))
    back = from_dict(orjson.loads(blob))
    assert back == s
    assert orjson.dumps(to_dict(back)) == blob
    ev = Transaction("x", "u1", s.last_ts + DAY_MS, "purchase", 777, "CNY", "c1", "US")
    a, b = update(s, ev, 50_000, CFG), update(back, ev, 50_000, CFG)
    assert a.anomaly == b.anomaly and to_dict(a.state) == to_dict(b.state)


def test_to_dict_holds_only_ints_strings_and_flat_lists() -> None:
    for key, value in to_dict(rich_state()).items():
        assert isinstance(key, str) and len(key) <= 2
        items = value if isinstance(value, list) else [value]
        assert all(type(x) in (int, str) for x in items), key


def test_clone_is_independent() -> None:
    s = rich_state()
    before = to_dict(s)
    c = clone(s)
    assert c == s
    later = s.last_ts + 2 * DAY_MS
    for ev in (Transaction("y", "u1", s.last_ts, "purchase", 1, "CNY", "new", "FR"),
               Transaction("z", "u1", later, "inflow", 9_000, "CNY"),
               InstallmentDue("d3", "u1", later, "i3", 5_000, later + 9 * DAY_MS, "CNY"),
               InstallmentOverdue("od2", "u1", later, "i2", 40),
               InstallmentPaid("p2", "u1", later, "i2", 5_000, "CNY")):
        c = update(c, ev, 80_000, CFG).state
    assert c != s and to_dict(s) == before


def test_clone_shares_no_mutable_container() -> None:
    s = rich_state()
    c = clone(s)
    containers = 0
    for f in fields(FeatureState):
        orig, copy = getattr(s, f.name), getattr(c, f.name)
        if isinstance(orig, dict | list):
            containers += 1
            assert copy is not orig, f.name
            olds, news = (orig.values(), copy.values()) if isinstance(orig, dict) else (orig, copy)
            assert all(a is not b for a, b in zip(olds, news, strict=True)
                       if isinstance(a, list)), f.name
    assert containers == 11
    assert s.hours and s.days and s.installments and s.util_peaks  # nested lists were seen


def test_a_state_stored_before_the_previous_liabilities_report_decodes() -> None:
    # Written by the code before ``lp`` existed (an opening, reports of 100 000 and then
    # 150 000 liabilities, a purchase, a statement): still format 1, and it decodes with no
    # previous report, so the trend reads flat until the next report.
    old = {"v": 1, "t": 1770681600000, "f": 1767225600000, "o": 1767225600000, "b": 20000,
           "u": 4000, "in": [900000, 1767225600000], "li": [150000, 1770681600000],
           "a": [0, 1767398400000], "n": [206524448610340, 2000, 1769212800000, 0, 0, 0, 0]}
    s = from_dict(old)
    assert (s.liabilities, s.prev_liabilities, s.prev_liabilities_ts) == (150_000, 0, 0)
    assert to_dict(s) == old  # nothing new to write: what an older reader reads
    now = 1770681600000
    assert vector(s, now, 50_000)["liabilities_trend"] == 1.0
    s = update(s, LiabilitiesReported("l3", "u1", now + DAY_MS, 300_000, "CNY"), 50_000,
               CFG).state
    assert to_dict(s)["lp"] == [150_000, now]
    assert vector(s, now + DAY_MS, 50_000)["liabilities_trend"] == 2.0


def test_liabilities_trend_compares_the_latest_report_with_the_one_before() -> None:
    def trend(*reports: tuple[int, int]) -> float:
        s = new_state()
        for i, (day, amount) in enumerate(reports):
            s = update(s, LiabilitiesReported(f"l{i}", "u1", T0 + day * DAY_MS, amount, "CNY"),
                       0, CFG).state
        return vector(s, T0 + 400 * DAY_MS, 0)["liabilities_trend"]

    assert trend() == trend((1, 5_000)) == 1.0  # no report before the latest: flat
    assert trend((1, 100_000), (30, 150_000)) == 1.5
    assert trend((30, 150_000), (1, 100_000)) == 1.5  # by event time, not arrival
    assert trend((1, 100_000), (60, 150_000), (30, 50_000)) == 3.0  # a late one in between
    assert trend((1, 100_000), (30, 150_000), (30, 120_000)) == 1.2  # the same time: restated
    assert trend((1, 0), (30, 0)) == 1.0  # nothing owed, twice: flat
    assert trend((1, 0), (30, 10_000)) == RATIO_CAP  # debt elsewhere appears
    assert trend((1, 10_000), (30, 0)) == 0.0


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        from_dict({"v": 99})


def test_worst_case_size_is_under_the_bound() -> None:
    # Every container full, every number at its widest (bucket amounts < 10^9).
    t = 4_102_444_799_999
    nm, nh, nd = t // 60_000, t // 3_600_000, t // DAY_MS
    a = 10**9 - 1
    s = FeatureState(last_ts=t, first_ts=t, open_ts=t, balance=10**12, income=10**12,
                     income_ts=t, liabilities=10**12, liabilities_ts=t, prev_liabilities=10**12,
                     prev_liabilities_ts=t, ontime_ts=t, missed_ts=t,
                     too_late=10**9, anomaly=10_000, anomaly_ts=t, util=100_000)
    s.minutes = {nm - i: [99_999, a, a] for i in range(MINUTES_SPAN)}
    s.hours = {nh - i: [99_999, a, a] for i in range(HOURS_SPAN)}
    s.days = {nd - i: [99_999] + [a] * (DAY_FIELDS - 1) for i in range(DAYS_SPAN)}
    s.inflow = {nd - i: a for i in range(INFLOW_KEPT)}
    s.dpd = {nd - i: 3_650 for i in range(LONG_SPAN)}
    s.categories = {2**32 - 1 - i: nh - 719 + i for i in range(MAX_CATEGORIES)}
    s.countries = {f"X{chr(65 + i)}": nh - 719 + i for i in range(MAX_COUNTRIES)}
    s.util_peaks = [[nd - 29 + i, 100_000 - i] for i in range(DAYS_SPAN)]
    s.installments = {2**48 - 1 - i: [a, t, a, 3_650, 2, t]
                      for i in range(MAX_OPEN + RESOLVED_KEPT)}
    s.totals = [sum(c) for c in zip(*s.days.values(), strict=True)]
    s.totals[2] = 0
    assert from_dict(to_dict(s)) == s
    assert len(orjson.dumps(to_dict(s))) <= MAX_STATE_BYTES


def test_vector_shape_on_empty_and_rich_states() -> None:
    for s in (new_state(), rich_state()):
        for now in (T0, T0 + 30 * DAY_MS, T0 + 400 * DAY_MS):
            for limit in (0, 1, 50_000):
                v = vector(s, now, limit)
                assert tuple(v) == FEATURE_NAMES
                assert all(type(x) is float and math.isfinite(x) and x >= 0 for x in v.values())
