"""The simulated portfolio's personas: who they are, their calendar, categories and lifestyles.

:mod:`lab.simulate` runs them; :mod:`lab.sim_user` holds one user's plan and day.

:func:`simulate` produces every *input* event of a population — ``transactions``,
``repayments`` and ``account-events``, exactly per the contract of DESIGN §2 (each one
passes :func:`streams.codec.decode`) — in event-time order. :func:`ground_truth` says what
each user really is and what really happens to them; the engine never sees it, the
evaluation does. :func:`write_log` writes the log as JSON Lines (``{"topic", "key",
"value"}``) and the truth next to it (``pop.jsonl`` → ``pop.truth.jsonl``); so does
``python -m lab.simulate pop.jsonl --users N --days D --seed S``.

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
(not emitted; recorded in the ground truth as ``declined_demand``, which the backtest offers
to every run's card) when they would take the approximate balance over the limit; occasional
refunds, cash advances, trips abroad and cross-border online purchases;
``income_reported`` and ``liabilities_reported`` now and then; and a monthly statement: a
``due`` event (``f"{user_id}-m{n}"``, 10-30 % of the balance, at least 100 major units, due
20 days later) followed by its ``paid`` and/or ``overdue`` events. Core banking sends an
``overdue`` notice at 1, 5, 10, 15, 20, 30, 60, 90, ... days past due while an installment
is unpaid.

``steady_payer`` (36 %)
    Stable monthly salary, moderate spending (15-35 % of income), mostly pays the whole
    statement balance, always before the due date. Never overdue.
``growing_earner`` (12 %)
    Income rises 2-5 % a month plus one raise of 10-30 %; spending (45-70 % of income)
    rises with it; revolves (pays 1.2-2x the installment), so utilization is high. Always
    on time: the user who deserves increases.
``income_collapse`` (5 %)
    Normal until a random collapse day: the salary stops (odd-job inflows worth ~15 % of it
    remain), purchases halve and cash advances (MCC ``6011``) every few days draw the line
    down. The first statement issued five or more days after the collapse is never paid
    (``default_ts``: its due date) — maybe a token partial payment — nor is any later one;
    the notices climb through 30 and 60 days past due. ``defaults`` is true when the
    30-days-past-due point falls inside the horizon (so for every persona that stops
    paying).
``recovering_misser`` (8 %)
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
``seasonal_spender`` (16 %)
    Spends 2.5-4x as much in one or two peak months of the horizon (revolving then), pays on
    time.
``over_indebted_drifter`` (3 %)
    A revolver whose income never falls: from a random day their spending climbs (+2 % a
    day, compounding on the plan), they pay only the installment due, report rising debt
    elsewhere and take occasional cash advances; 60-120 days later they stop paying (the
    first statement after that day is never paid, like ``income_collapse``).
``bust_out`` (1 %)
    A new account (opened at 20-60 % of the horizon) that behaves for 20-40 days, then maxes
    the line in two or three days (purchases in everyday categories and cash advances) and
    never makes a payment again.
``technical_late`` (4 %)
    A steady payer whose one installment is paid 1-3 days late, in full, for a technical
    reason (a changed bank account, a holiday); on time otherwise. Never defaults.

Shares, and how they compare with public figures: 9 % of the users stop paying within the
year (``income_collapse``, ``over_indebted_drifter``, ``bust_out``), about twice the annual
charge-off rate of US bank credit-card loans (between about 2.5 % and 4.7 % a year over
2015-2024, Federal Reserve Board, *Charge-Off and Delinquency Rates on Loans and Leases at
Commercial Banks*): a stressed portfolio, so that a few thousand users hold enough
defaults to measure. 5 % of the users have a fraudulent burst, far above the share of
cardholders defrauded in a year; it is sized for the fraud figures to have enough bursts,
not calibrated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist
from types import MappingProxyType
from typing import Any, Final

from features.windows import DAY_MS, MINUTE_MS

STEADY: Final = "steady_payer"
GROWER: Final = "growing_earner"
COLLAPSE: Final = "income_collapse"
RECOVERER: Final = "recovering_misser"
FRAUD: Final = "fraud_burst"
THIN: Final = "thin_file"
SEASONAL: Final = "seasonal_spender"
DRIFTER: Final = "over_indebted_drifter"
BUST_OUT: Final = "bust_out"
TECHNICAL: Final = "technical_late"
#: Every persona, in the fixed order in which a user's persona is drawn.
PERSONAS: Final = (STEADY, GROWER, COLLAPSE, RECOVERER, FRAUD, THIN, SEASONAL, DRIFTER,
                   BUST_OUT, TECHNICAL)
#: Personas that never miss a payment.
ON_TIME_PERSONAS: Final = frozenset({STEADY, GROWER, FRAUD, THIN, SEASONAL})
#: Personas who stop paying (their default may fall just past the horizon).
DEFAULTING_PERSONAS: Final = frozenset({COLLAPSE, DRIFTER, BUST_OUT})
DEFAULT_MIX: Final[Mapping[str, float]] = MappingProxyType({
    STEADY: 0.36,
    GROWER: 0.12,
    COLLAPSE: 0.05,
    RECOVERER: 0.08,
    FRAUD: 0.05,
    THIN: 0.10,
    SEASONAL: 0.16,
    DRIFTER: 0.03,
    BUST_OUT: 0.01,
    TECHNICAL: 0.04,
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
WEEKDAY: Final = (0.9, 0.9, 0.95, 0.95, 1.1, 1.25, 1.15)
_AMOUNT_SIGMA: Final = 0.75
_PROFILES: Final = 24  # lifestyle profiles (category mixes) shared by the population
Z_STEPS: Final = 4096
#: Standard normal quantiles: a log-normal draw is one random() and a table look-up.
Z_TABLE: Final = tuple(NormalDist().inv_cdf((i + 0.5) / Z_STEPS) for i in range(Z_STEPS))
LOGNORMAL: Final = tuple(math.exp(_AMOUNT_SIGMA * z) for z in Z_TABLE)

#: The input topics the simulator writes to (logical names, DESIGN §2).
TOPICS: Final = ("transactions", "repayments", "account-events")
Row = tuple[int, str, str, dict[str, Any]]
"""(ts, topic, key, value) of one emitted event."""
PendingRow = tuple[int, int, str, dict[str, Any], int]
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


DAY_CUM: Final = _cum(_DAY_HOURS)
NIGHT_CUM: Final = _cum(_NIGHT_HOURS)


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
class SimDay:
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


def calendar(cfg: SimConfig) -> list[SimDay]:
    offset = cfg.utc_offset_minutes * MINUTE_MS
    days = []
    for d in range(cfg.days):
        start = cfg.start_ts + d * DAY_MS
        local = datetime.fromtimestamp((start + offset) / 1000, UTC)
        days.append(SimDay(start, start + DAY_MS, (start + offset) % DAY_MS, local.month,
                         local.day, local.weekday()))
    return days


@dataclass(frozen=True, slots=True)
class Lifestyle:
    """A lifestyle: which categories a user buys in, how often, and the mean ticket."""

    codes: tuple[str, ...]
    cum: tuple[float, ...]
    medians: tuple[float, ...]
    mean_major: float


def lifestyles(seed: int) -> list[Lifestyle]:
    rng = random.Random(f"limitstream-profiles:{seed}")
    out = []
    for _ in range(_PROFILES):
        chosen = [c for c in MCC_CATALOGUE if c[0] in ("5411", "5499") or rng.random() < 0.5]
        weights = [pop * (0.3 + 1.7 * rng.random()) for _, _, pop in chosen]
        cum = _cum(weights)
        probs = [w / sum(weights) for w in weights]
        mean = sum(p * m for p, (_, m, _) in zip(probs, chosen, strict=True))
        out.append(Lifestyle(tuple(c[0] for c in chosen), tuple(cum),
                            tuple(c[1] for c in chosen), mean * math.exp(_AMOUNT_SIGMA**2 / 2)))
    return out


def foreign_country(countries: Sequence[str], home: str, x: float) -> str:
    """A country of ``countries`` drawn by ``x`` in [0, 1), never the home country."""
    i = int(x * len(countries))
    return countries[i] if countries[i] != home else countries[(i + 1) % len(countries)]


def pick_persona(shares: Sequence[float], x: float) -> str:
    acc = 0.0
    chosen = STEADY
    for persona, share in zip(PERSONAS, shares, strict=True):
        if share > 0:
            acc += share
            chosen = persona
            if x < acc:
                break
    return chosen


def poisson(r: Callable[[], float], lam: float) -> int:
    limit = math.exp(-lam)
    k = 0
    p = r()
    while p > limit:
        k += 1
        p *= r()
    return k
