"""Seeded portfolio simulator: a reproducible population of credit-line users (issue 6).

:func:`simulate` produces every *input* event of a population — ``transactions``,
``repayments`` and ``account-events``, exactly per the contract of DESIGN §2 (each one
passes :func:`streams.codec.decode`) — in event-time order. :func:`ground_truth` says what
each user really is and what really happens to them; the engine never sees it, the
evaluation does. :func:`write_log` writes the log as JSON Lines (``{"topic", "key",
"value"}``) and the truth next to it (``pop.jsonl`` → ``pop.truth.jsonl``); so does
``python -m streams.simulate pop.jsonl --users N --days D --seed S``.

Same configuration, same bytes: every user draws from their own ``random.Random`` seeded by
``(seed, user index)`` (never the global generator, never the clock), so a user's story
does not depend on how many other users there are either.

Personas
--------
Hidden from the engine; drawn per user from :attr:`SimConfig.persona_mix` (the defaults sum
to 1). Every persona has an ``opened`` event (the portfolio's users at ``start_ts``, new
accounts later) with an initial limit of 5 000-50 000 (thin files 2 000-8 000) major units
and usually a declared income; salary ``inflow`` on a monthly pay day; purchases whose
number per day is Poisson, whose amounts are log-normal around the merchant category's
typical ticket, whose local time of day follows a day/night profile, and which are declined
(not emitted) when they would take the approximate balance over the limit; occasional
refunds, cash advances, trips abroad and cross-border online purchases;
``income_reported`` and ``liabilities_reported`` now and then; and a monthly statement: a
``due`` event (``f"{user_id}-m{n}"``, 10-30 % of the balance, at least 100 major units, due
20 days later) followed by its ``paid`` and/or ``overdue`` events. Core banking sends an
``overdue`` notice at 1, 5, 10, 15, 20, 30, 60, 90, ... days past due while an installment
is unpaid.

``steady_payer`` (40 %)
    Stable monthly salary, moderate spending (15-35 % of income), mostly pays the whole
    statement balance, always before the due date. Never overdue.
``growing_earner`` (12 %)
    Income rises 2-5 % a month plus one raise of 10-30 %; spending (45-70 % of income)
    rises with it; revolves (pays 1.2-2x the installment), so utilization is high. Always
    on time: the user who deserves increases.
``income_collapse`` (8 %)
    Normal until a random collapse day: the salary stops (odd-job inflows worth ~15 % of it
    remain), purchases halve and cash advances (MCC ``6011``) every few days draw the line
    down. The first statement issued five or more days after the collapse is never paid
    (``default_ts``: its due date) — maybe a token partial payment — nor is any later one;
    the notices climb through 30 and 60 days past due. ``defaults`` is true when the
    30-days-past-due point falls inside the horizon.
``recovering_misser`` (10 %)
    A revolver whose income dips around a random day: the next one or two installments are
    paid 5-20 days late (``overdue`` notices at 1, 5 and up to 20 dpd, then ``paid`` of the
    full arrears); afterwards (``recovers_ts``: the last arrears payment) always on time.
``fraud_burst`` (5 %)
    A normal, on-time user whose card is used, one night (local 00:30-03:30), for 8-20
    large purchases within 40-110 minutes, in categories nobody else uses (jewellery,
    precious metals, money transfer, gambling, computers ...) and mostly abroad, spending
    75-95 % of the available credit; usually charged back (refunded) 6-20 days later.
``thin_file`` (10 %)
    A new account opened late in the horizon (55-85 % of it), a low limit, often no
    declared income, irregular small inflows and few transactions. On time.
``seasonal_spender`` (15 %)
    Spends 2.5-4x as much in one or two peak months of the horizon (revolving then), pays on
    time.

Example
-------
>>> cfg = SimConfig(users=3, days=40)
>>> lines = list(simulate(cfg))
>>> lines[0].topic, lines[0].value["kind"]
('account-events', 'opened')
>>> all(a.ts <= b.ts for a, b in zip(lines, lines[1:], strict=False))
True
>>> [t["persona"] for t in ground_truth(cfg)] == [t["persona"] for t in ground_truth(cfg)]
True
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from heapq import heappop, heappush
from operator import itemgetter
from pathlib import Path
from statistics import NormalDist
from types import MappingProxyType
from typing import Any, Final

import orjson

from features.windows import DAY_MS, HOUR_MS, MINUTE_MS

STEADY: Final = "steady_payer"
GROWER: Final = "growing_earner"
COLLAPSE: Final = "income_collapse"
RECOVERER: Final = "recovering_misser"
FRAUD: Final = "fraud_burst"
THIN: Final = "thin_file"
SEASONAL: Final = "seasonal_spender"
#: Every persona, in the fixed order in which a user's persona is drawn.
PERSONAS: Final = (STEADY, GROWER, COLLAPSE, RECOVERER, FRAUD, THIN, SEASONAL)
#: Personas that never miss a payment.
ON_TIME_PERSONAS: Final = frozenset({STEADY, GROWER, FRAUD, THIN, SEASONAL})
DEFAULT_MIX: Final[Mapping[str, float]] = MappingProxyType({
    STEADY: 0.40,
    GROWER: 0.12,
    COLLAPSE: 0.08,
    RECOVERER: 0.10,
    FRAUD: 0.05,
    THIN: 0.10,
    SEASONAL: 0.15,
})

#: Merchant categories of everyday spending: (MCC, typical ticket in major units, popularity).
MCC_CATALOGUE: Final = (
    ("5411", 85.0, 10.0),  # grocery stores, supermarkets
    ("5812", 120.0, 8.0),  # restaurants
    ("5814", 35.0, 8.0),  # fast food
    ("5499", 25.0, 7.0),  # convenience stores
    ("5999", 150.0, 6.0),  # miscellaneous retail, online marketplaces
    ("4121", 40.0, 5.0),  # taxis, ride hailing
    ("4111", 10.0, 4.0),  # commuter transport
    ("5541", 300.0, 3.0),  # service stations
    ("5815", 30.0, 3.0),  # digital goods
    ("5462", 30.0, 3.0),  # bakeries
    ("5311", 260.0, 2.0),  # department stores
    ("5651", 320.0, 2.0),  # clothing
    ("5912", 90.0, 2.0),  # drug stores, pharmacies
    ("4814", 100.0, 1.0),  # telecom services
    ("4900", 220.0, 1.0),  # utilities
    ("7832", 90.0, 1.0),  # cinemas
    ("5942", 80.0, 0.8),  # book stores
    ("5732", 1200.0, 0.6),  # electronics
    ("7011", 650.0, 0.5),  # hotels
    ("8062", 400.0, 0.4),  # hospitals
    ("4511", 1600.0, 0.3),  # airlines
    ("8299", 1500.0, 0.2),  # schools, education
)
#: Cash advances (ATM / manual cash disbursement).
CASH_MCC: Final = "6011"
#: Categories of a fraud burst, none of them in :data:`MCC_CATALOGUE`: jewellery, precious
#: metals, money transfer, gambling, computers, clothing boutiques.
FRAUD_MCCS: Final = ("5944", "5094", "4829", "7995", "5045", "5691")
TRIP_COUNTRIES: Final = ("JP", "TH", "SG", "KR", "US", "MY", "GB", "FR", "AU", "VN")
ONLINE_COUNTRIES: Final = ("US", "SG", "GB", "JP", "DE")
FRAUD_COUNTRIES: Final = ("US", "GB", "NG", "RU", "BR", "TR", "UA", "RO")
#: Days past due at which core banking sends an ``overdue`` notice for an unpaid installment.
NOTICE_DPD: Final = (1, 5, 10, 15, 20, 30, 60, 90, 120, 150, 180, 270, 365)
#: Installment rules: a share of the balance, at least this much (minor units, if owed),
#: due this long after the statement.
MIN_DUE: Final = 10_000
DUE_AFTER_MS: Final = 20 * DAY_MS

# Local hour-of-day weights of card spending: a day person and a night owl.
_DAY_HOURS: Final = (0.6, 0.3, 0.15, 0.1, 0.1, 0.2, 0.8, 2.0, 3.5, 4.0, 4.5, 5.5,
                     7.0, 6.0, 5.0, 5.0, 5.5, 6.5, 8.0, 8.5, 8.0, 6.5, 4.0, 2.0)
_NIGHT_HOURS: Final = (2.5, 1.8, 1.0, 0.5, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3.5, 4.5,
                       6.0, 5.5, 4.5, 4.5, 5.0, 6.0, 7.5, 8.0, 8.5, 8.0, 6.5, 4.0)
# Spending by local weekday (Monday = 0).
_WEEKDAY: Final = (0.9, 0.9, 0.95, 0.95, 1.1, 1.25, 1.15)
_AMOUNT_SIGMA: Final = 0.75
_PROFILES: Final = 24  # lifestyle profiles (category mixes) shared by the population
_ZN: Final = 4096
#: Standard normal quantiles: a log-normal draw is one random() and a table look-up.
_Z: Final = tuple(NormalDist().inv_cdf((i + 0.5) / _ZN) for i in range(_ZN))
_LOGNORMAL: Final = tuple(math.exp(_AMOUNT_SIGMA * z) for z in _Z)

#: The input topics the simulator writes to (logical names, DESIGN §2).
_TOPICS: Final = ("transactions", "repayments", "account-events")
Row = tuple[int, str, str, dict[str, Any]]
"""(ts, topic, key, value) of one emitted event."""
_Pending = tuple[int, int, str, dict[str, Any], int]
"""(ts, generation seq, topic, value, balance delta applied when emitted)."""


def _cum(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    out: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        out.append(acc / total)
    out[-1] = 1.0
    return out


_DAY_CUM: Final = _cum(_DAY_HOURS)
_NIGHT_CUM: Final = _cum(_NIGHT_HOURS)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What population to simulate. The same configuration gives the same log, byte for byte."""

    users: int = 1000
    days: int = 180
    seed: int = 7
    start_ts: int = 1_767_225_600_000  # 2026-01-01T00:00Z
    currency: str = "CNY"
    home_country: str = "CN"
    utc_offset_minutes: int = 480
    persona_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MIX, hash=False)

    def __post_init__(self) -> None:
        if self.users < 0:
            raise ValueError(f"users={self.users}: must be >= 0")
        if self.days < 1:
            raise ValueError(f"days={self.days}: must be >= 1")
        if not (self.start_ts >= 946_684_800_000
                and self.start_ts + self.days * DAY_MS < 4_102_444_800_000):
            raise ValueError("start_ts .. start_ts + days must lie in [2000, 2100)")
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise ValueError(f"currency={self.currency!r}: expected an ISO 4217 code")
        if (len(self.home_country) != 2 or not self.home_country.isalpha()
                or not self.home_country.isupper()):
            raise ValueError(f"home_country={self.home_country!r}: expected ISO 3166 alpha-2")
        if not -14 * 60 <= self.utc_offset_minutes <= 14 * 60:
            raise ValueError(f"utc_offset_minutes={self.utc_offset_minutes}: out of range")
        unknown = sorted(set(self.persona_mix) - set(PERSONAS))
        if unknown:
            raise ValueError(f"persona_mix: unknown personas {unknown}; known: {PERSONAS}")
        shares = [float(self.persona_mix.get(p, 0.0)) for p in PERSONAS]
        if any(not math.isfinite(s) or s < 0 for s in shares):
            raise ValueError("persona_mix: shares must be finite and >= 0")
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"persona_mix: shares sum to {sum(shares)}, not 1")
        mix = MappingProxyType({p: s for p, s in zip(PERSONAS, shares, strict=True)})
        object.__setattr__(self, "persona_mix", mix)

    @property
    def end_ts(self) -> int:
        """First millisecond after the horizon."""
        return self.start_ts + self.days * DAY_MS


@dataclass(frozen=True, slots=True)
class LogLine:
    """One input message: its topic, key (the user id), JSON object and event time."""

    topic: str
    key: str
    value: dict[str, Any]
    ts: int


@dataclass(frozen=True, slots=True)
class _Day:
    """One simulated day: the 24 hours from ``start``, and its local calendar date."""

    start: int
    end: int
    tod0: int  #: local time of day (ms) at ``start``
    month: int
    mday: int
    weekday: int

    def at(self, local_ms: int) -> int:
        """The ts inside this day at which local time of day is ``local_ms``."""
        return self.start + (local_ms - self.tod0) % DAY_MS


def _calendar(cfg: SimConfig) -> list[_Day]:
    offset = cfg.utc_offset_minutes * MINUTE_MS
    days = []
    for d in range(cfg.days):
        start = cfg.start_ts + d * DAY_MS
        local = datetime.fromtimestamp((start + offset) / 1000, UTC)
        days.append(_Day(start, start + DAY_MS, (start + offset) % DAY_MS, local.month,
                         local.day, local.weekday()))
    return days


@dataclass(frozen=True, slots=True)
class _Profile:
    """A lifestyle: which categories a user buys in, how often, and the mean ticket."""

    codes: tuple[str, ...]
    cum: tuple[float, ...]
    medians: tuple[float, ...]
    mean_major: float


def _profiles(seed: int) -> list[_Profile]:
    rng = random.Random(f"limitstream-profiles:{seed}")
    out = []
    for _ in range(_PROFILES):
        chosen = [c for c in MCC_CATALOGUE if c[0] in ("5411", "5499") or rng.random() < 0.5]
        weights = [pop * (0.3 + 1.7 * rng.random()) for _, _, pop in chosen]
        cum = _cum(weights)
        probs = [w / sum(weights) for w in weights]
        mean = sum(p * m for p, (_, m, _) in zip(probs, chosen, strict=True))
        out.append(_Profile(tuple(c[0] for c in chosen), tuple(cum),
                            tuple(c[1] for c in chosen), mean * math.exp(_AMOUNT_SIGMA**2 / 2)))
    return out


def _abroad(countries: Sequence[str], home: str, x: float) -> str:
    """A country of ``countries`` drawn by ``x`` in [0, 1), never the home country."""
    i = int(x * len(countries))
    return countries[i] if countries[i] != home else countries[(i + 1) % len(countries)]


def _pick_persona(shares: Sequence[float], x: float) -> str:
    acc = 0.0
    chosen = STEADY
    for persona, share in zip(PERSONAS, shares, strict=True):
        if share > 0:
            acc += share
            chosen = persona
            if x < acc:
                break
    return chosen


def _poisson(r: Callable[[], float], lam: float) -> int:
    limit = math.exp(-lam)
    k = 0
    p = r()
    while p > limit:
        k += 1
        p *= r()
    return k


class _User:
    """One user's hidden plan and running state; :meth:`step` emits one day of their events."""

    __slots__ = (
        "balance", "burst_day", "ca_prob", "catch_up", "cb_prob", "collapse_day",
        "currency", "declared", "defaulted", "end_ts", "eseq", "growth", "gseq", "home",
        "hours", "income", "inst_n", "lam", "liab_ratio", "limit", "miss_day", "misses_left",
        "next_ca_day", "open_day", "pay_full", "payday", "peak_mult", "peaks", "pending",
        "persona", "profile", "raise_day", "raise_mult", "report_day", "rng", "scale", "share",
        "stmt_day", "trip", "truth", "uid",
    )

    def __init__(self, cfg: SimConfig, idx: int, cal: list[_Day],
                 profiles: list[_Profile], shares: Sequence[float]) -> None:
        self.uid = f"u{idx:06d}"
        rng = self.rng = random.Random(f"limitstream-user:{cfg.seed}:{idx}")
        r = rng.random
        days = cfg.days
        self.persona = persona = _pick_persona(shares, r())
        self.currency = cfg.currency
        self.home = cfg.home_country
        self.end_ts = cfg.end_ts
        self.balance = 0
        self.pending: list[_Pending] = []
        self.gseq = 0
        self.eseq = 0
        self.inst_n = 0
        self.defaulted = False
        self.truth: dict[str, Any] = {
            "user_id": self.uid, "persona": persona, "opened_ts": None, "initial_limit": 0,
            "monthly_income": 0, "defaults": False, "default_ts": None,
            "default_installment_id": None, "collapse_ts": None, "recovers_ts": None,
            "missed_installments": [], "fraud_burst_ts": None, "fraud_burst_end_ts": None,
            "fraud_burst_count": 0, "fraud_chargeback_ts": None, "peak_months": [],
            "income_growth_monthly": 0.0,
        }
        # -- the common plan (drawn in a fixed order: reproducibility) --
        income_major = 10_000.0 * math.exp(0.45 * _Z[int(r() * _ZN)])
        if persona == THIN:
            income_major *= 0.6
            self.open_day = min(days - 1, int(days * (0.55 + 0.30 * r())))
            limit_major = min(8_000, max(2_000, round(income_major * (0.5 + r()) / 500) * 500))
            self.declared = 0 if r() < 0.5 else round(income_major * (0.9 + 0.4 * r()) / 100) * 100
        else:
            self.open_day = 0
            limit_major = min(50_000, max(5_000, round(income_major * (1.0 + 2.0 * r()) / 1000)
                                          * 1000))
            self.declared = 0 if r() < 0.1 else round(income_major * (0.9 + 0.4 * r()) / 100) * 100
        self.income = round(income_major * 100)
        self.limit = limit_major * 100
        self.truth["initial_limit"] = self.limit
        self.truth["monthly_income"] = self.income
        self.profile = profiles[int(r() * len(profiles))]
        self.hours = _NIGHT_CUM if r() < 0.2 else _DAY_CUM
        self.scale = math.sqrt(income_major / 10_000.0) * (0.7 + 0.6 * r())
        spend_share = 0.15 + 0.20 * r()  # of monthly income
        self.payday = 1 + int(r() * 28)
        self.stmt_day = 1 + int(r() * 28)
        self.report_day = 1 + int(r() * 28)
        self.share = 0.10 + 0.20 * r()
        self.pay_full = 0.6 + 0.35 * r()
        self.catch_up = False  # seasonal: pays the whole balance after a peak month
        self.cb_prob = 0.0 if r() < 0.7 else 0.02 * r()
        self.ca_prob = 0.0 if r() < 0.85 else 0.01 * r()
        self.liab_ratio = 0.0 if r() < 0.4 else 0.4 * r()
        self.trip: tuple[int, int, str] | None = None
        if persona != THIN and r() < 0.25 and days > 2:
            t0 = 1 + int(r() * (days - 1))
            self.trip = (t0, t0 + 3 + int(r() * 7), _abroad(TRIP_COUNTRIES, self.home, r()))
        # -- persona plans --
        self.growth = 0.0
        self.raise_day = days
        self.raise_mult = 1.0
        self.collapse_day = days
        self.next_ca_day = days
        self.miss_day = days
        self.misses_left = 0
        self.burst_day = -1
        self.peaks: frozenset[int] = frozenset()
        self.peak_mult = 1.0
        if persona == GROWER:
            self.growth = 0.02 + 0.03 * r()
            self.raise_day = int(days * (0.2 + 0.6 * r()))
            self.raise_mult = 1.1 + 0.2 * r()
            spend_share = 0.45 + 0.25 * r()
            self.pay_full = 0.0
            self.share = 0.15 + 0.15 * r()
            self.truth["income_growth_monthly"] = round(self.growth, 4)
        elif persona == COLLAPSE:
            lo, hi = max(1, days // 9), days - 95
            self.collapse_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 3)
            self.next_ca_day = self.collapse_day + int(r() * 3)
            self.pay_full = 0.3 + 0.4 * r()
            self.truth["collapse_ts"] = cfg.start_ts + self.collapse_day * DAY_MS
        elif persona == RECOVERER:
            lo, hi = 25, days - 105
            self.miss_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else max(1, days // 3)
            self.misses_left = 1 if r() < 0.5 else 2
            self.pay_full = 0.0
        elif persona == FRAUD:
            self.pay_full = 1.0
            lo, hi = max(1, days // 6), days - 2
            self.burst_day = lo + int(r() * (hi - lo + 1)) if hi >= lo else -1
        elif persona == THIN:
            spend_share = 0.05 + 0.10 * r()
            self.pay_full = 0.8
        elif persona == SEASONAL:
            months = sorted({day.month for day in cal[1:]}) or [cal[0].month]
            peaks = {months[int(r() * len(months))]}
            if r() < 0.5:
                peaks.add(months[int(r() * len(months))])
            self.peaks = frozenset(peaks)
            self.peak_mult = 2.5 + 1.5 * r()
            self.truth["peak_months"] = sorted(peaks)
        self.lam = spend_share * income_major / 30.0 / (self.profile.mean_major * self.scale)

    # -- helpers --

    def _push(self, ts: int, topic: str, value: dict[str, Any], delta: int = 0) -> None:
        if ts < self.end_ts:
            heappush(self.pending, (ts, self.gseq, topic, value, delta))
            self.gseq += 1

    def _tx(self, ts: int, kind: str, amount: int, mcc: str, country: str,
            delta: int = 0) -> None:
        self._push(ts, "transactions", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": kind, "amount": amount,
            "currency": self.currency, "merchant_category": mcc, "country": country,
        }, delta)

    def _inflow(self, ts: int, amount: int) -> None:
        self._push(ts, "transactions", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": "inflow",
            "amount": max(1, amount), "currency": self.currency,
        })

    def _account(self, ts: int, kind: str, name: str, amount: int) -> None:
        self._push(ts, "account-events", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": kind, name: amount,
            "currency": self.currency,
        })

    def _repay(self, ts: int, kind: str, inst: str, name: str, value: int,
               delta: int = 0) -> None:
        v: dict[str, Any] = {"event_id": "", "user_id": self.uid, "ts": ts, "kind": kind,
                             "installment_id": inst, name: value}
        if kind != "overdue":
            v["currency"] = self.currency
        self._push(ts, "repayments", v, delta)

    def _income_now(self, d: int) -> int:
        """True monthly income on day ``d`` (minor units)."""
        inc = self.income
        if self.persona == GROWER:
            inc = round(inc * (1.0 + self.growth) ** (d / 30.0)
                        * (self.raise_mult if d >= self.raise_day else 1.0))
        elif self.persona == RECOVERER and self.miss_day - 15 <= d < self.miss_day + 30:
            inc //= 2
        elif d >= self.collapse_day:
            inc = round(inc * 0.15)  # odd jobs
        return inc

    # -- one day --

    def step(self, d: int, day: _Day, out: list[Row]) -> None:
        if d >= self.open_day:
            if d == self.open_day:
                self._open(d, day)
            else:
                self._live(d, day)
        pending = self.pending
        end = day.end
        uid = self.uid
        while pending and pending[0][0] < end:
            ts, _, topic, value, delta = heappop(pending)
            self.eseq += 1
            value["event_id"] = f"{uid}-{self.eseq}"
            if delta:
                self.balance += delta
            out.append((ts, topic, uid, value))

    def _open(self, d: int, day: _Day) -> None:
        r = self.rng.random
        if d == 0:
            ts = day.start + int(r() * 2 * HOUR_MS)
        else:
            ts = day.at(9 * HOUR_MS + int(r() * 11 * HOUR_MS))
        self.truth["opened_ts"] = ts
        v: dict[str, Any] = {"event_id": "", "user_id": self.uid, "ts": ts, "kind": "opened",
                             "initial_limit": self.limit, "currency": self.currency}
        if self.declared:
            v["declared_income"] = self.declared * 100
        self._push(ts, "account-events", v)
        if r() < 0.6:
            self._account(ts + int((1 + r() * 59) * MINUTE_MS), "liabilities_reported",
                          "monthly_liabilities", round(self.income * self.liab_ratio / 100) * 100)

    def _live(self, d: int, day: _Day) -> None:
        r = self.rng.random
        persona = self.persona
        income = self._income_now(d)
        collapsed = d >= self.collapse_day
        # -- inflows --
        if persona == THIN or collapsed:
            if r() < (0.12 if collapsed else 0.15):
                share = (0.15 + 0.4 * r()) if collapsed else (0.1 + 0.3 * r())
                self._inflow(day.at(8 * HOUR_MS + int(r() * 14 * HOUR_MS)), round(income * share))
        elif day.mday == self.payday:
            self._inflow(day.at(9 * HOUR_MS + int(r() * 3 * HOUR_MS)),
                         round(income * (0.97 + 0.06 * r())))
        if not collapsed and r() < 0.04:  # transfers from family, friends, savings
            self._inflow(day.at(8 * HOUR_MS + int(r() * 15 * HOUR_MS)),
                         round(50_000 * math.exp(0.8 * _Z[int(r() * _ZN)])))
        # -- purchases --
        lam = self.lam * _WEEKDAY[day.weekday]
        if persona == GROWER:
            lam *= income / self.income
        elif persona == SEASONAL and day.month in self.peaks:
            lam *= self.peak_mult
        elif collapsed:
            lam *= 0.3 if self.defaulted else 0.5
        n = _poisson(r, lam) if lam > 0 else 0
        if n:
            self._purchases(n, d, day)
        # -- cash advances --
        if collapsed and d >= self.next_ca_day:
            self.next_ca_day = d + 2 + int(r() * 5)
            self._cash_advance(day, 0.05 + 0.10 * r())
        elif self.ca_prob and r() < self.ca_prob:
            self._cash_advance(day, 0.02 + 0.08 * r())
        if d == self.burst_day:
            self._burst(day)
        # -- statement, reports --
        if day.mday == self.stmt_day and d >= self.open_day + 14:
            self._statement(d, day)
        if day.mday == self.report_day:
            if r() < (0.05 if persona == THIN else 0.2):
                reported = income if not collapsed or r() < 0.5 else self.income
                reported = round(reported * (0.95 + 0.1 * r()) / 10_000) * 10_000
                self._account(day.at(10 * HOUR_MS + int(r() * 8 * HOUR_MS)), "income_reported",
                              "monthly_income", reported)
            if r() < 0.12:
                ratio = self.liab_ratio * (1.6 if collapsed else 1.0)
                self._account(day.at(10 * HOUR_MS + int(r() * 8 * HOUR_MS)),
                              "liabilities_reported", "monthly_liabilities",
                              round(self.income * ratio / 10_000) * 10_000)

    def _purchases(self, n: int, d: int, day: _Day) -> None:
        # The hot loop (most events are purchases): helpers inlined, look-ups hoisted.
        r = self.rng.random
        prof = self.profile
        codes, cum, medians = prof.codes, prof.cum, prof.medians
        last = len(codes) - 1
        hours = self.hours
        scale = self.scale * 100.0
        trip = self.trip
        abroad = trip is not None and trip[0] <= d < trip[1]
        home, limit, uid, currency = self.home, self.limit, self.uid, self.currency
        pending = self.pending
        start = day.start
        shift = DAY_MS - day.tod0  # day.at(local) == start + (shift + local) % DAY_MS
        balance = self.balance
        for _ in range(n):
            h = bisect_right(hours, r())
            ts = start + (shift + (h if h < 24 else 23) * HOUR_MS + int(r() * HOUR_MS)) % DAY_MS
            j = bisect_right(cum, r())
            if j > last:
                j = last
            amount = int(medians[j] * scale * _LOGNORMAL[int(r() * _ZN)]) or 1
            if balance + amount > limit:
                continue  # declined: never reaches the log
            mcc = codes[j]
            if abroad and trip is not None and r() < 0.85:
                country = trip[2]
                if r() < 0.15:
                    mcc = "7011"
            elif self.cb_prob and r() < self.cb_prob:
                country = _abroad(ONLINE_COUNTRIES, home, r())
            else:
                country = home
            balance += amount
            heappush(pending, (ts, self.gseq, "transactions", {
                "event_id": "", "user_id": uid, "ts": ts, "kind": "purchase", "amount": amount,
                "currency": currency, "merchant_category": mcc, "country": country,
            }, 0))
            self.gseq += 1
            if r() < 0.015:  # returned goods
                back = amount if r() < 0.7 else max(1, int(amount * (0.2 + 0.7 * r())))
                self._tx(ts + int((1 + 19 * r()) * DAY_MS), "refund", back, mcc, country, -back)
        self.balance = balance

    def _cash_advance(self, day: _Day, share: float) -> None:
        r = self.rng.random
        available = self.limit - self.balance
        amount = min(round(self.limit * share / 50_000) * 50_000, available // 50_000 * 50_000)
        if amount >= 50_000:
            self.balance += amount
            self._tx(day.at(9 * HOUR_MS + int(r() * 13 * HOUR_MS)), "cash_advance", amount,
                     CASH_MCC, self.home)

    def _burst(self, day: _Day) -> None:
        r = self.rng.random
        budget = int(max(0, self.limit - self.balance) * (0.75 + 0.2 * r()))
        # 8-20 purchases, fewer when little credit is left: each one stays a big ticket.
        n = max(8, min(8 + int(r() * 13), budget // 40_000))
        ts0 = day.at(30 * MINUTE_MS + int(r() * 3 * HOUR_MS))
        duration = (40 + int(r() * 71)) * MINUTE_MS
        offsets = [0, *sorted(int(r() * duration) for _ in range(n - 1))]
        weights = [0.5 + r() for _ in range(n)]
        total = sum(weights)
        abroad = r() < 0.75
        countries = (_abroad(FRAUD_COUNTRIES, self.home, r()),
                     _abroad(FRAUD_COUNTRIES, self.home, r()))
        chargeback = r() < 0.8
        back_ts = ts0 + int((6 + 14 * r()) * DAY_MS)
        for off, w in zip(offsets, weights, strict=True):
            amount = max(1, int(budget * w / total))
            mcc = FRAUD_MCCS[int(r() * len(FRAUD_MCCS))]
            country = countries[int(r() * 2)] if abroad and r() < 0.9 else self.home
            self.balance += amount
            self._tx(ts0 + off, "purchase", amount, mcc, country)
            if chargeback:
                self._tx(back_ts + off, "refund", amount, mcc, country, -amount)
        if ts0 < self.end_ts:
            self.truth["fraud_burst_ts"] = ts0
            self.truth["fraud_burst_end_ts"] = min(ts0 + offsets[-1], self.end_ts - 1)
            self.truth["fraud_burst_count"] = sum(1 for o in offsets if ts0 + o < self.end_ts)
            if chargeback and back_ts < self.end_ts:
                self.truth["fraud_chargeback_ts"] = back_ts

    def _statement(self, d: int, day: _Day) -> None:
        balance = self.balance
        if balance <= 0:
            return  # nothing owed, no installment this month
        r = self.rng.random
        persona = self.persona
        self.inst_n += 1
        inst = f"{self.uid}-m{self.inst_n}"
        amount_due = min(balance, max(int(balance * self.share), MIN_DUE))
        ts = day.at(2 * HOUR_MS + int(r() * 3 * HOUR_MS))
        due_ts = ts + DUE_AFTER_MS
        self._push(ts, "repayments", {
            "event_id": "", "user_id": self.uid, "ts": ts, "kind": "due",
            "installment_id": inst, "amount_due": amount_due, "due_ts": due_ts,
            "currency": self.currency,
        })
        truth = self.truth
        if persona == COLLAPSE and (self.defaulted or d >= self.collapse_day + 5):
            # Never paid: notices climb for as long as the horizon lasts.
            if not self.defaulted:
                self.defaulted = True
                if due_ts + 30 * DAY_MS < self.end_ts:
                    truth["defaults"] = True
                    truth["default_ts"] = due_ts
                    truth["default_installment_id"] = inst
                if r() < 0.4:  # a token partial payment, after the due date
                    part = max(1, int(amount_due * (0.05 + 0.25 * r())))
                    self._repay(due_ts + int((3 + 22 * r()) * DAY_MS), "paid", inst,
                                "amount_paid", part, -part)
            self._notices(inst, due_ts, self.end_ts)
            return
        if persona == RECOVERER and self.misses_left and d >= self.miss_day:
            # Paid 5-20 days late, in full, after the first notices.
            self.misses_left -= 1
            paid_ts = due_ts + int((5 + int(r() * 16)) * DAY_MS + (1 + 19 * r()) * HOUR_MS)
            self._notices(inst, due_ts, paid_ts)
            self._repay(paid_ts, "paid", inst, "amount_paid", amount_due, -amount_due)
            truth["missed_installments"].append(inst)
            if not self.misses_left:
                truth["recovers_ts"] = paid_ts if paid_ts < self.end_ts else None
            return
        # On time: between the statement and the due date.
        paid_ts = due_ts - int((1 + 359 * r()) * HOUR_MS)
        pay_full = self.pay_full
        if persona == SEASONAL:
            if day.month in self.peaks:
                pay_full = 0.1
            elif self.catch_up:
                pay_full = 1.0
        if r() < pay_full:
            amount = balance
        else:
            amount = min(balance, int(amount_due * (1.2 + 0.8 * r())) if persona == GROWER
                         else int(amount_due * (1.0 + 0.6 * r())))
        self._repay(paid_ts, "paid", inst, "amount_paid", amount, -amount)
        if persona == SEASONAL:
            self.catch_up = day.month in self.peaks

    def _notices(self, inst: str, due_ts: int, until: int) -> None:
        for dpd in NOTICE_DPD:
            t = due_ts + dpd * DAY_MS
            if t >= until or t >= self.end_ts:
                break
            self._repay(t, "overdue", inst, "days_past_due", dpd)




class _Population:
    """All users; :meth:`days` yields each day's events of everybody in event-time order."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.calendar = _calendar(cfg)
        profiles = _profiles(cfg.seed)
        shares = [cfg.persona_mix[p] for p in PERSONAS]
        self.users = [_User(cfg, i, self.calendar, profiles, shares)
                      for i in range(1, cfg.users + 1)]

    def days(self) -> Iterator[list[Row]]:
        """One list per day, sorted by ts; equal ts keep (user index, the user's own order)."""
        key = itemgetter(0)
        users = self.users
        for d, day in enumerate(self.calendar):
            out: list[Row] = []
            # The simulation makes no reference cycles: the cyclic collector would only
            # rescan the population's live objects (a third of the time), so it is paused
            # while a day is built, never while the caller runs.
            collecting = gc.isenabled()
            gc.disable()
            try:
                for user in users:
                    user.step(d, day, out)
            finally:
                if collecting:
                    gc.enable()
            out.sort(key=key)  # stable: ties stay in user order, then in the user's order
            yield out

    def truth(self) -> list[dict[str, Any]]:
        """Per user, what really happened (complete once :meth:`days` is exhausted)."""
        return [u.truth for u in self.users]


def simulate(cfg: SimConfig, truth: list[dict[str, Any]] | None = None
             ) -> Iterator[LogLine]:
    """Every input event of every user, ts non-decreasing, ties in a deterministic order.

    ``truth``, when given, receives :func:`ground_truth` once the events are exhausted: a
    caller that needs both runs the simulation once."""
    pop = _Population(cfg)
    for batch in pop.days():
        for ts, topic, key, value in batch:
            yield LogLine(topic, key, value, ts)
    if truth is not None:
        truth.extend(pop.truth())


def ground_truth(cfg: SimConfig) -> list[dict[str, Any]]:
    """What each user is and what happens to them: persona, ``defaults``, ``default_ts``
    (due date of the first installment that is never paid, when its 30 dpd point is inside
    the horizon), ``collapse_ts``, ``recovers_ts``, ``missed_installments``,
    ``fraud_burst_ts`` (first purchase of the burst), ``peak_months``, ... — one dict per
    user, in user order. Runs the simulation (the outcomes depend on the balance)."""
    pop = _Population(cfg)
    for _ in pop.days():
        pass
    return pop.truth()


def truth_path(path: Path) -> Path:
    """Where the ground truth of the log at ``path`` goes: ``pop.jsonl`` →
    ``pop.truth.jsonl``."""
    return path.with_name(path.name.removesuffix(path.suffix) + ".truth.jsonl")


def write_truth(cfg: SimConfig, path: Path,
                truth: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write the ground truth of the log at ``path`` (JSON Lines, one user a line) next to
    it; ``truth`` saves re-running the simulation when the caller has it. Returns its path."""
    rows = ground_truth(cfg) if truth is None else truth
    out = truth_path(path)
    with out.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    return out


def write_log(cfg: SimConfig, path: Path, progress: bool = True) -> int:
    """Write the log as JSON Lines (``{"topic", "key", "value"}``, value an object) and its
    ground truth next to it (:func:`truth_path`). Returns the number of log lines."""
    pop = _Population(cfg)
    dumps = orjson.dumps
    # The line is orjson.dumps({"topic": t, "key": k, "value": v}) byte for byte, assembled
    # around the value (topics are fixed, keys are [a-z0-9] ids): half the work, no dicts.
    heads = {t: b'{"topic":' + dumps(t) + b',"key":"' for t in _TOPICS}
    lines = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f, _Progress(progress, cfg) as bar:
        for batch in pop.days():
            if batch:
                f.write(b"\n".join([heads[topic] + key.encode() + b'","value":' + dumps(value)
                                     + b"}" for _, topic, key, value in batch]))
                f.write(b"\n")
                lines += len(batch)
            bar.advance(len(batch))
    write_truth(cfg, path, pop.truth())
    return lines


class _Progress:
    """A rich progress bar over the simulated days (on stderr), or nothing."""

    def __init__(self, enabled: bool, cfg: SimConfig) -> None:
        self.enabled = enabled
        self.cfg = cfg
        self.events = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(f"simulating {self.cfg.users:,} users"), BarColumn(),
                MofNCompleteColumn(), TextColumn("days"),
                TextColumn("{task.fields[events]:,} events"), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("simulate", total=self.cfg.days, events=0)
        return self

    def advance(self, events: int) -> None:
        self.events += events
        if self.enabled:
            self.bar.update(self.task, advance=1, events=self.events)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(None, None, None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streams.simulate OUT.jsonl [--users N --days D --seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m streams.simulate",
                                     description="Write a seeded simulated portfolio log.")
    parser.add_argument("out", type=Path, help="JSON Lines log to write (truth goes beside it)")
    defaults = SimConfig(users=0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = SimConfig(users=args.users, days=args.days, seed=args.seed)
    n = write_log(cfg, args.out, progress=not args.no_progress)
    print(f"{n} events -> {args.out} (truth: {truth_path(args.out)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
