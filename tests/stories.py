"""The policy's stories as event logs, one user each (issue 4's scenarios).

Each builder returns the records of one user in event-time order. They are replayed through
the pure core in tests/unit/test_stories.py and published to a real worker in
tests/e2e/test_scenarios.py; both must tell the same story.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streams.kafka_io import LogRecord

#: 2025-01-02T00:00Z (a Thursday, as 2026-01-01 is). The stories run for about a year and are
#: published with the broker's own timestamps: a worker refuses an event more than the allowed
#: clock skew ahead of its record's timestamp (``ts_in_future``), so the stories must lie in
#: the past of whoever runs the tests.
T0 = 1_735_776_000_000
DAY = 86_400_000
HOUR = 3_600_000


class Story:
    """Builds one user's log; ``at(day, hour)`` is event time."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.records: list[tuple[int, LogRecord]] = []
        self.seq = 0
        self.installment = 0

    def _add(self, topic: str, ts: int, kind: str, **fields: Any) -> None:
        self.seq += 1
        value = {"event_id": f"{self.user}-{self.seq}", "user_id": self.user, "ts": ts,
                 "kind": kind, **fields}
        self.records.append((ts, LogRecord(topic, self.user.encode(), orjson.dumps(value))))

    @staticmethod
    def at(day: float, hour: int = 12) -> int:
        return T0 + int(day * DAY) + hour * HOUR

    def opened(self, day: float, limit: int, income: int) -> None:
        self._add("account-events", self.at(day, 9), "opened", initial_limit=limit,
                  currency="CNY", declared_income=income)

    def income(self, day: float, amount: int) -> None:
        self._add("account-events", self.at(day, 9), "income_reported",
                  monthly_income=amount, currency="CNY")

    def inflow(self, day: float, amount: int) -> None:
        self._add("transactions", self.at(day, 8), "inflow", amount=amount, currency="CNY")

    def purchase(self, day: float, amount: int, hour: int = 13, mcc: str = "5411",
                 country: str = "CN", minute: int = 0) -> None:
        self._add("transactions", self.at(day, hour) + minute * 60_000, "purchase",
                  amount=amount, currency="CNY", merchant_category=mcc, country=country)

    def due(self, day: float, amount: int) -> str:
        self.installment += 1
        iid = f"{self.user}-i{self.installment}"
        self._add("repayments", self.at(day, 6), "due", installment_id=iid, amount_due=amount,
                  due_ts=self.at(day + 20, 23), currency="CNY")
        return iid

    def paid(self, day: float, iid: str, amount: int) -> None:
        self._add("repayments", self.at(day, 18), "paid", installment_id=iid,
                  amount_paid=amount, currency="CNY")

    def overdue(self, day: float, iid: str, dpd: int) -> None:
        self._add("repayments", self.at(day, 7), "overdue", installment_id=iid,
                  days_past_due=dpd)

    def command(self, day: float, kind: str, **fields: Any) -> None:
        self._add("limit-commands", self.at(day, 10), kind, operator="ops-1",
                  reason=f"story: {kind}", **fields)

    def month(self, start: float, inflow: int, spend: list[int], due: int,
              pay: str = "on_time") -> str:
        """A month of life: income arrives, spending, an installment and its outcome."""
        self.inflow(start, inflow)
        for i, amount in enumerate(spend):
            self.purchase(start + 1 + i * 2, amount, mcc=("5411", "5812", "5999")[i % 3])
        iid = self.due(start + 5, due)
        if pay == "on_time":
            self.paid(start + 15, iid, due)
        elif pay == "late":
            self.overdue(start + 30, iid, 5)
        return iid

    def log(self) -> list[LogRecord]:
        return [r for _, r in sorted(self.records, key=lambda tr: tr[0])]


def good_payer() -> Story:
    """Pays on time every month, uses most of the line, income steady: the limit grows."""
    s = Story("story-grow")
    s.opened(0, 1_000_000, 1_500_000)
    s.purchase(0.5, 650_000)
    for m in range(7):
        s.month(1 + 30 * m, 1_500_000, [90_000, 60_000, 50_000], 200_000)
    return s


def income_collapse() -> Story:
    """Steady for three months, then the inflow collapses: the limit is cut."""
    s = Story("story-cut")
    s.opened(0, 1_000_000, 1_500_000)
    for m in range(3):
        s.month(1 + 30 * m, 1_500_000, [80_000, 40_000], 100_000)
    for m in range(3, 5):
        s.month(1 + 30 * m, 200_000, [80_000, 40_000], 100_000)
    return s


def suspended_then_reinstated() -> Story:
    """Misses two repayments (suspended), clears the arrears, waits out the suspension, then
    pays on time month after month and climbs the ladder back to ACTIVE."""
    s = Story("story-ladder")
    s.opened(0, 1_000_000, 1_500_000)
    s.month(1, 1_500_000, [50_000], 60_000)
    first = s.month(31, 1_500_000, [50_000], 60_000, pay="late")
    second = s.month(61, 1_500_000, [50_000], 60_000, pay="late")
    s.paid(100, first, 60_000)
    s.paid(100, second, 60_000)
    for m in range(4, 16):
        s.month(1 + 30 * m, 1_500_000, [20_000], 30_000)
    return s


def relapse() -> Story:
    """Suspended, reinstated on probation, then late again: back to SUSPENDED."""
    s = Story("story-relapse")
    s.opened(0, 1_000_000, 1_500_000)
    s.month(1, 1_500_000, [50_000], 60_000)
    first = s.month(31, 1_500_000, [50_000], 60_000, pay="late")
    second = s.month(61, 1_500_000, [50_000], 60_000, pay="late")
    s.paid(100, first, 60_000)
    s.paid(100, second, 60_000)
    for m in range(4, 7):
        s.month(1 + 30 * m, 1_500_000, [20_000], 30_000)
    s.month(1 + 30 * 7, 1_500_000, [20_000], 30_000, pay="late")
    return s


def operator_freeze() -> Story:
    """An operator freezes the account, then unfreezes it."""
    s = Story("story-freeze")
    s.opened(0, 1_000_000, 1_500_000)
    s.month(1, 1_500_000, [50_000], 60_000)
    s.command(20, "freeze")
    s.purchase(22, 10_000)
    s.command(25, "unfreeze")
    s.month(31, 1_500_000, [50_000], 60_000)
    return s


def fraud_burst() -> Story:
    """An established customer's card is used at night, abroad, in new categories, for large
    tickets: the burst is held within its first few transactions, released after the review
    period (at the next event)."""
    s = Story("story-fraud")
    s.opened(0, 1_000_000, 1_500_000)
    for m in range(4):  # a dozen small everyday spends a month: a history to compare with
        s.month(1 + 30 * m, 1_500_000, [9_000, 6_000, 5_000, 7_000, 8_000, 4_000] * 2, 20_000)
    for i, mcc in enumerate(("5944", "5094", "4829", "7995", "5045", "5691")):
        # 01:10 local time (UTC+8) is 17:10 UTC the day before.
        s.purchase(99, 120_000, hour=17, mcc=mcc, country="US", minute=10 + 7 * i)
    s.month(121, 1_500_000, [9_000], 20_000)
    return s


STORIES: dict[str, Callable[[], Story]] = {
    "grow": good_payer,
    "cut": income_collapse,
    "ladder": suspended_then_reinstated,
    "relapse": relapse,
    "freeze": operator_freeze,
    "fraud": fraud_burst,
}


def all_stories_log() -> list[LogRecord]:
    """Every story's records, merged in event-time order (ties: story order)."""
    merged: list[tuple[int, int, LogRecord]] = []
    for i, build in enumerate(STORIES.values()):
        merged += [(ts, i, r) for ts, r in build().records]
    return [r for _, _, r in sorted(merged, key=lambda t: (t[0], t[1]))]
