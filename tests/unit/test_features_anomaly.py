"""The per-user anomaly score."""

from __future__ import annotations

import pytest

from features import FeatureConfig, FeatureState, new_state, update, vector
from features.windows import DAY_MS, HOUR_MS
from streams.records import IncomeReported, Transaction, TransactionKind

T0 = 1_767_225_600_000
LIMIT = 10_000_000
CFG = FeatureConfig()
NOON_LOCAL = 4 * HOUR_MS  # 12:00 in UTC+8


def spend(ts: int, amount: int = 1_000, kind: TransactionKind = "purchase", cat: str = "5411",
          country: str = "") -> Transaction:
    return Transaction(f"t{ts}-{amount}", "u1", ts, kind, amount, "CNY", cat,
                       country)


def history(n: int) -> FeatureState:
    """``n`` ordinary spends: 10.00 at local noon, at home, one category, one a day."""
    s = new_state()
    for d in range(n):
        s = update(s, spend(T0 + d * DAY_MS + NOON_LOCAL), LIMIT, CFG).state
    return s


def score(s: FeatureState, ev: Transaction) -> float:
    u = update(s, ev, LIMIT, CFG)
    assert u.anomaly is not None
    return u.anomaly


NOW = T0 + 25 * DAY_MS + NOON_LOCAL


def test_first_transaction_scores_zero() -> None:
    assert score(new_state(), spend(NOW, 10**9, "cash_advance", "new", "US")) == 0.0


def test_ordinary_spend_scores_zero() -> None:
    assert score(history(20), spend(NOW)) == 0.0


def test_every_signal_at_once() -> None:
    # 100x the mean (amount 0.35) + new category 0.15 + new country 0.15 + night 0.10 (the user
    # never spends at night) + cash 0.10 (never took cash) = 0.85; no burst.
    night = NOW - NOON_LOCAL + 17 * HOUR_MS  # 01:00 local
    assert score(history(20), spend(night, 100_000, "cash_advance", "7995", "US")) == 0.85


def test_seen_country_counts_a_quarter() -> None:
    s = update(history(20), spend(NOW - DAY_MS, country="JP"), LIMIT, CFG).state
    assert score(s, spend(NOW, country="JP")) == pytest.approx(0.15 * 0.25)
    assert score(history(20), spend(NOW, country="CN")) == 0.0  # home country, explicit


def test_thin_history_is_damped() -> None:
    ev = spend(NOW, 100_000, "purchase", "7995")
    assert score(history(5), ev) == pytest.approx(0.5 * (0.35 + 0.15))
    assert score(history(10), ev) == pytest.approx(0.35 + 0.15)


def test_burst() -> None:
    s = history(20)
    for i in range(12):
        s = update(s, spend(NOW + i * 1_000), LIMIT, CFG).state
    # 12 spends in the last hour against a usual rate of 32/720 an hour:
    # (12 - 2 - 3 * 32 / 720) / 8 > 1, so the burst signal is full: 0.15.
    assert score(s, spend(NOW + 20_000)) == 0.15


def test_score_is_stored_for_the_vector_and_only_for_spend() -> None:
    s = history(20)
    u = update(s, spend(NOW, 100_000, cat="7995"), LIMIT, CFG)
    assert u.anomaly == pytest.approx(0.5)
    u2 = update(u.state, IncomeReported("i", "u1", NOW + 1, 5, "CNY"), LIMIT, CFG)
    assert u2.anomaly is None
    u3 = update(u2.state, spend(NOW + 2, 1_000, "refund", ""), LIMIT, CFG)
    assert u3.anomaly is None
    assert vector(u3.state, NOW + 3, LIMIT)["anomaly_score"] == 0.5
    # A late spend does not replace the score of the newest one.
    u4 = update(u3.state, spend(NOW - HOUR_MS, 1_000), LIMIT, CFG)
    assert u4.anomaly == 0.0
    assert vector(u4.state, NOW + 3, LIMIT)["anomaly_score"] == 0.5


def test_deterministic() -> None:
    ev = spend(NOW, 30_000, "cash_advance", "7995", "US")
    assert score(history(15), ev) == score(history(15), ev)
