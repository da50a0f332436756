"""Applying one event to a user's feature state.

:func:`update` **consumes** its ``state``: it mutates it in place and returns the same object
inside :class:`Update` (copying ~2 KiB of counters per event would cost more than the rest of
the update). The caller owns the object and replaces its reference with ``Update.state``; a
caller that needs the state as it was must :func:`~features.state.clone` it first.
:func:`update` does not raise for any valid :data:`~streams.records.InputEvent` (the codec's
guarantees: amounts > 0, known kinds); should it ever raise, the object may be half-updated,
so the caller must reload the state from its store (e.g. ``from_dict`` of the table value)
rather than keep using it.

What each event does:

* ``purchase`` / ``cash_advance``: spend; adds to the balance and to the 1 h / 24 h / 7 d /
  30 d windows; scored for anomaly *before* it enters the windows.
* ``refund``: lowers the balance (never below 0); counts in the 30 d refund ratio.
* ``inflow``: income proxy, kept 92 days (a month and its 60-day baseline); the balance is
  untouched.
* ``due`` / ``paid`` / ``overdue``: see :mod:`features.installments`; ``paid`` also lowers
  the balance (never below 0), whether or not the installment is known.
* ``opened``: opening time, and ``declared_income`` as the initial monthly income.
* ``income_reported`` / ``liabilities_reported``: the latest by event time wins; the
  liabilities report it replaced is kept as the previous one (the trend's baseline).
* ``closed`` and limit commands: only advance event time (the windows' horizon).

Examples
--------
>>> from streams.records import Transaction
>>> cfg = FeatureConfig()
>>> from features.state import new_state
>>> u = update(new_state(), Transaction("e1", "u1", 1_767_225_600_000, "purchase", 2_500, "CNY",
...                                     "5411", ""), limit=10_000, cfg=cfg)
>>> u.state.balance, u.outcome, u.anomaly
(2500, None, 0.0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from features.anomaly import SCALE, score_units
from features.installments import on_due, on_overdue, on_paid
from features.outcome import Outcome
from features.state import (
    CASH,
    MAX,
    NIGHT,
    REFUND,
    SUM,
    XB,
    FeatureState,
    N,
)
from features.windows import (
    DAY_MS,
    DAYS_SPAN,
    HOUR_MS,
    HOURS_SPAN,
    INFLOW_KEPT,
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
)

#: Distinct merchant categories remembered (the 32 most recently seen in 30 d): the distinct
#: counts saturate at this value.
MAX_CATEGORIES: Final = 32
#: Distinct foreign countries remembered (the 8 most recently seen in 30 d).
MAX_COUNTRIES: Final = 8
#: Utilization is held in basis points and capped at 10x the limit (also when the limit is 0
#: and something is owed), so that it stays finite.
BP: Final = 10_000
UTIL_CAP_BP: Final = 10 * BP
_NIGHT_END_HOUR: Final = 6
K = TypeVar("K", int, str)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Deployment constants the features depend on."""

    home_country: str = "CN"  #: a spend is cross-border when its country is not "" or this
    utc_offset_minutes: int = 480  #: local time of the users; night = local hour in [0, 6)


@dataclass(frozen=True, slots=True)
class Update:
    """What one event did."""

    state: FeatureState  #: the same object as the ``state`` passed in, now updated
    outcome: Outcome | None  #: an installment resolved with this event
    anomaly: float | None  #: the score of this event when it is a spend, else None


def utilization_bp(balance: int, limit: int) -> int:
    """Balance / limit in basis points, capped at :data:`UTIL_CAP_BP`.

    Examples
    --------
    >>> utilization_bp(2_500, 10_000), utilization_bp(0, 0), utilization_bp(1, 0)
    (2500, 0, 100000)
    """
    if limit <= 0:
        return 0 if balance <= 0 else UTIL_CAP_BP
    return min(UTIL_CAP_BP, balance * BP // limit)


def _peak_insert(peaks: list[list[int]], day: int, bp: int) -> None:
    # ``peaks`` is a max-frontier: days ascending, bp strictly descending. The max over any
    # window ending at or after the newest day is its first entry inside the window; an entry
    # with a later-or-equal day and a higher-or-equal bp makes an earlier one useless.
    i = len(peaks)
    while i > 0 and peaks[i - 1][0] >= day:  # scan from the end: ``day`` is usually the newest
        i -= 1
    if i < len(peaks) and peaks[i][1] >= bp:  # the largest bp at a day >= ``day``
        return
    j = i
    while j > 0 and peaks[j - 1][1] <= bp:  # earlier days with a bp no larger: dominated
        j -= 1
    k = i + 1 if i < len(peaks) and peaks[i][0] == day else i  # same day, smaller bp
    peaks[j:k] = [[day, bp]]


def _record_util(state: FeatureState, ts: int, limit: int) -> None:
    # The day's peak is the larger of the utilization before and after the change: the value
    # before held from the start of the day (or of the window) until this event.
    bp = utilization_bp(state.balance, limit)
    peak = max(state.util, bp)
    state.util = bp
    day = ts // DAY_MS
    if peak > 0 and day > state.last_ts // DAY_MS - DAYS_SPAN:
        _peak_insert(state.util_peaks, day, peak)


def observe_limit(state: FeatureState, limit: int, ts: int) -> FeatureState:
    """The policy set the limit to ``limit`` at ``ts``: record the utilization under the new
    limit (and the one it replaces) in the 30 d peak. Mutates and returns ``state``.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state(); s.last_ts = s.first_ts = DAY_MS; s.balance = 5_000
    >>> observe_limit(s, 10_000, DAY_MS).util
    5000
    >>> observe_limit(s, 50_000, DAY_MS).util_peaks    # 50 % held until the change
    [[1, 5000]]
    """
    _record_util(state, ts, limit)
    return state


def _evict(state: FeatureState, old: int, new: int) -> None:
    # Called when the newest event time moves from ``old`` to ``new``: drop what no window at
    # or after ``new`` can reach. Each check is one comparison unless a bucket edge was crossed,
    # and a container is scanned only when its oldest entry (``min``, in C) has expired.
    nm = new // MINUTE_MS
    if nm != old // MINUTE_MS:
        _drop_keys(state.minutes, nm - MINUTES_SPAN)
        _drop_keys(state.burst, nm - MINUTES_SPAN)
    nh = new // HOUR_MS
    if nh != old // HOUR_MS:
        _drop_keys(state.hours, nh - HOURS_SPAN)
    nd = new // DAY_MS
    if nd == old // DAY_MS:
        return
    lo = nd - DAYS_SPAN
    days = state.days
    if days and min(days) <= lo:
        totals = state.totals
        for k in [k for k in days if k <= lo]:
            b = days.pop(k)
            for i in (N, SUM, CASH, NIGHT, XB, REFUND):
                totals[i] -= b[i]
    lo_hour = (lo + 1) * 24  # first hour of the oldest day kept
    _drop_seen_before(state.categories, lo_hour)
    _drop_seen_before(state.countries, lo_hour)
    if state.util_peaks and state.util_peaks[0][0] <= lo:
        state.util_peaks[:] = [p for p in state.util_peaks if p[0] > lo]
    _drop_keys(state.inflow, nd - INFLOW_KEPT)
    _drop_keys(state.dpd, nd - LONG_SPAN)


def _drop_seen_before(seen: dict[K, int], hour: int) -> None:
    """Remove the keys last seen before ``hour``."""
    if seen and min(seen.values()) < hour:
        for key in [key for key, h in seen.items() if h < hour]:
            del seen[key]


def _drop_keys(d: dict[int, Any], lo: int) -> None:
    """Remove the keys ``<= lo``."""
    if d and min(d) <= lo:
        for k in [k for k in d if k <= lo]:
            del d[k]


def _remember(seen: dict[K, int], key: K, hour: int, cap: int) -> None:
    # Keep the ``cap`` keys seen most recently (ties by key): the result does not depend on
    # arrival order, and a distinct count over any window is min(cap, true count).
    prev = seen.get(key)
    if prev is None or hour > prev:
        seen[key] = hour
        if len(seen) > cap:
            worst = min(seen.items(), key=lambda kv: (kv[1], str(kv[0])))
            del seen[worst[0]]


def _spend(state: FeatureState, ev: Transaction, limit: int, cfg: FeatureConfig) -> Update:
    ts, amount = ev.ts, ev.amount
    cash = ev.kind == "cash_advance"
    local_hour = (ts + cfg.utc_offset_minutes * MINUTE_MS) // HOUR_MS % 24
    night = local_hour < _NIGHT_END_HOUR
    country = ev.country if ev.country and ev.country != cfg.home_country else ""
    category = zlib.crc32(ev.merchant_category.encode()) if ev.merchant_category else -1
    units = score_units(state, amount, cash=cash, night=night, country=country,
                        category=category)
    state.balance += amount
    last = state.last_ts
    day = ts // DAY_MS
    if day > last // DAY_MS - DAYS_SPAN:
        b = state.days.get(day)
        if b is None:
            b = state.days[day] = [0, 0, 0, 0, 0, 0, 0]
        t = state.totals
        b[N] += 1
        t[N] += 1
        b[SUM] += amount
        t[SUM] += amount
        if amount > b[MAX]:
            b[MAX] = amount
        if cash:
            b[CASH] += amount
            t[CASH] += amount
        if night:
            b[NIGHT] += amount
            t[NIGHT] += amount
        if country:
            b[XB] += amount
            t[XB] += amount
        hour = ts // HOUR_MS
        if hour > last // HOUR_MS - HOURS_SPAN:
            # [count, sum, max], inlined: this is the hottest path of the worker.
            h = state.hours.get(hour)
            if h is None:
                state.hours[hour] = [1, amount, amount]
            else:
                h[0] += 1
                h[1] += amount
                if amount > h[2]:
                    h[2] = amount
            minute = ts // MINUTE_MS
            if minute > last // MINUTE_MS - MINUTES_SPAN:
                if units:
                    state.burst[minute] = state.burst.get(minute, 0) + units
                m = state.minutes.get(minute)
                if m is None:
                    state.minutes[minute] = [1, amount, amount]
                else:
                    m[0] += 1
                    m[1] += amount
                    if amount > m[2]:
                        m[2] = amount
        if category >= 0:
            prev = state.categories.get(category)
            if prev is None or hour > prev:
                _remember(state.categories, category, hour, MAX_CATEGORIES)
        if country:
            _remember(state.countries, country, hour, MAX_COUNTRIES)
    else:
        state.too_late += 1
    # Spend only raises the balance, so the day's peak is the utilization after it (unless the
    # limit moved without observe_limit: _record_util takes the max anyway).
    _record_util(state, ts, limit)
    if ts >= state.anomaly_ts:
        state.anomaly = units
        state.anomaly_ts = ts
    return Update(state, None, units / SCALE)


def _report_liabilities(state: FeatureState, amount: int, ts: int) -> None:
    # The latest report by event time wins, and the one it replaced is kept for the trend; a
    # report between the two (arriving late) becomes the previous one; a report at the same
    # time as the latest restates it.
    if ts > state.liabilities_ts:
        if state.liabilities_ts:
            state.prev_liabilities = state.liabilities
            state.prev_liabilities_ts = state.liabilities_ts
        state.liabilities, state.liabilities_ts = amount, ts
    elif ts == state.liabilities_ts:
        state.liabilities = amount
    elif ts >= state.prev_liabilities_ts:
        state.prev_liabilities, state.prev_liabilities_ts = amount, ts


def update(state: FeatureState, event: InputEvent, limit: int, cfg: FeatureConfig) -> Update:
    """Apply ``event`` to ``state`` (consumed: mutated in place and returned in the result).

    ``limit`` is the user's credit limit when the event happens, for utilization.

    Examples
    --------
    >>> from streams.records import InstallmentDue, InstallmentPaid
    >>> from features.state import new_state
    >>> s, cfg = new_state(), FeatureConfig()
    >>> s = update(s, InstallmentDue("e1", "u", DAY_MS, "i1", 900, 3 * DAY_MS, "CNY"),
    ...            10_000, cfg).state
    >>> u = update(s, InstallmentPaid("e2", "u", 2 * DAY_MS, "i1", 900, "CNY"), 10_000, cfg)
    >>> u.outcome.kind, u.outcome.days_past_due, u.state.ontime_ts == 2 * DAY_MS
    ('paid_in_full', 0, True)
    """
    ts = event.ts
    last = state.last_ts
    if ts > last:
        if last:
            _evict(state, last, ts)
        state.last_ts = ts
    if state.first_ts == 0 or ts < state.first_ts:
        state.first_ts = ts
    kind = event.kind
    if type(event) is Transaction:
        if kind == "purchase" or kind == "cash_advance":
            return _spend(state, event, limit, cfg)
        day = ts // DAY_MS
        if kind == "refund":
            state.balance = max(0, state.balance - event.amount)
            if day > state.last_ts // DAY_MS - DAYS_SPAN:
                b = state.days.get(day)
                if b is None:
                    b = state.days[day] = [0, 0, 0, 0, 0, 0, 0]
                b[REFUND] += event.amount
                state.totals[REFUND] += event.amount
            else:
                state.too_late += 1
            _record_util(state, ts, limit)
        elif day > state.last_ts // DAY_MS - INFLOW_KEPT:  # inflow
            state.inflow[day] = state.inflow.get(day, 0) + event.amount
        else:
            state.too_late += 1
        return Update(state, None, None)
    outcome: Outcome | None = None
    if isinstance(event, InstallmentPaid):
        state.balance = max(0, state.balance - event.amount_paid)
        outcome = on_paid(state, event)
        _record_util(state, ts, limit)
    elif isinstance(event, InstallmentDue):
        on_due(state, event)
    elif isinstance(event, InstallmentOverdue):
        outcome = on_overdue(state, event)
    elif isinstance(event, AccountOpened):
        if state.open_ts == 0 or ts < state.open_ts:
            state.open_ts = ts
        if event.declared_income > 0 and ts >= state.income_ts:
            state.income, state.income_ts = event.declared_income, ts
    elif isinstance(event, IncomeReported):
        if ts >= state.income_ts:
            state.income, state.income_ts = event.monthly_income, ts
    elif isinstance(event, LiabilitiesReported):
        _report_liabilities(state, event.monthly_liabilities, ts)
    return Update(state, outcome, None)
