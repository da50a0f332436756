"""Installment bookkeeping: what ``due`` / ``paid`` / ``overdue`` events do to the state, the
:class:`~features.outcome.Outcome` they resolve, and the repayment features.

An installment is keyed by a 48-bit blake2b hash of its id (ids may be 128 characters; the
hash keeps the state small, and a collision among one user's at most 24 installments has a
probability near 10^-12). The :class:`Outcome` carries the id from the event itself.

Lifecycle: ``due`` opens a record; ``paid`` adds to its paid amount; the first of "paid in
full" (on time when ``days_past_due == 0``, late otherwise) and "an overdue notice" resolves
it (on time / late), at the resolving event's ``ts``. A record stays *open* while its paid
amount is below its amount due, even once resolved late, so that its arrears still count in
``overdue_amount`` and later payments still find it.

Bounds: at most :data:`MAX_OPEN` open records (beyond that the one with the oldest due date
is dropped: its arrears stop counting, and a later payment for it only reduces the balance);
a record paid in full is kept only while it is among the :data:`RESOLVED_KEPT` latest
resolutions, which is all the counters need.

Examples
--------
>>> from features.state import new_state
>>> from streams.records import InstallmentDue, InstallmentPaid
>>> s = new_state()
>>> on_due(s, InstallmentDue("e1", "u", 0, "i1", 1000, 5 * DAY_MS, "CNY"))
>>> o = on_paid(s, InstallmentPaid("e2", "u", 7 * DAY_MS + 1, "i1", 1000, "CNY"))
>>> o.kind, o.days_past_due, o.amount_due
('paid_in_full', 2, 1000)
"""

from __future__ import annotations

import hashlib
from typing import Final

from features.outcome import Outcome
from features.state import (
    I_DPD,
    I_DUE,
    I_DUE_TS,
    I_PAID,
    I_STATUS,
    I_STATUS_TS,
    ST_LATE,
    ST_ONTIME,
    ST_OPEN,
    FeatureState,
)
from features.windows import DAY_MS, LONG_SPAN
from streams.records import InstallmentDue, InstallmentOverdue, InstallmentPaid

#: Open (not fully paid) installments kept: a consumer line rarely has more than a few
#: purchase plans running at once; 12 leaves room for a year of monthly arrears.
MAX_OPEN: Final = 12
#: Resolved installments the on-time / late counters look at (DESIGN §4: "last 12").
RESOLVED_KEPT: Final = 12
#: How many of the latest installments ``paid_due_ratio_3`` looks at.
RATIO_LAST: Final = 3


def installment_key(installment_id: str) -> int:
    """The 48-bit key an installment is stored under.

    Examples
    --------
    >>> installment_key("i1") == installment_key("i1") != installment_key("i2")
    True
    >>> installment_key("x") < 2**48
    True
    """
    return int.from_bytes(hashlib.blake2b(installment_id.encode(), digest_size=6).digest())


def _days_late(ts: int, due_ts: int) -> int:
    return max(0, (ts - due_ts) // DAY_MS)


def record_dpd(state: FeatureState, ts: int, dpd: int) -> None:
    """Note ``dpd`` days past due on ``ts``'s day in the 90-day window (or count it too late).

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state(); s.last_ts = 100 * DAY_MS
    >>> record_dpd(s, 100 * DAY_MS, 5); record_dpd(s, 5 * DAY_MS, 9)
    >>> s.dpd, s.too_late
    ({100: 5}, 1)
    """
    d = ts // DAY_MS
    if d <= state.last_ts // DAY_MS - LONG_SPAN:
        state.too_late += 1
        return
    if dpd > state.dpd.get(d, 0):
        state.dpd[d] = dpd


def _resolve(state: FeatureState, rec: list[int], status: int, ts: int) -> None:
    if rec[I_STATUS] == ST_OPEN:
        rec[I_STATUS] = status
        rec[I_STATUS_TS] = ts
    elif status == ST_LATE:
        # An overdue notice after an on-time payment (inconsistent upstream): it did reach
        # overdue, so it counts late; its resolution time stays the first one.
        rec[I_STATUS] = ST_LATE


def _prune(state: FeatureState) -> None:
    inst = state.installments
    open_keys = [k for k, r in inst.items() if r[I_PAID] < r[I_DUE]]
    if len(open_keys) > MAX_OPEN:
        # Oldest due date first; the key breaks ties so the choice does not depend on order.
        open_keys.sort(key=lambda k: (inst[k][I_DUE_TS], k))
        for k in open_keys[: len(open_keys) - MAX_OPEN]:
            del inst[k]
    closed = [k for k, r in inst.items() if r[I_PAID] >= r[I_DUE]]
    if len(closed) > RESOLVED_KEPT:
        latest = set(_latest_resolved(state))
        for k in closed:
            if k not in latest:
                del inst[k]


def _latest_resolved(state: FeatureState) -> list[int]:
    """Keys of the :data:`RESOLVED_KEPT` latest resolved installments, newest first."""
    inst = state.installments
    resolved = [k for k, r in inst.items() if r[I_STATUS] != ST_OPEN]
    resolved.sort(key=lambda k: (inst[k][I_STATUS_TS], k), reverse=True)
    return resolved[:RESOLVED_KEPT]


def on_due(state: FeatureState, ev: InstallmentDue) -> None:
    """Track a newly issued installment (a repeated ``due`` for the same id re-states its
    amount and due date, keeping what was paid)."""
    key = installment_key(ev.installment_id)
    rec = state.installments.get(key)
    if rec is None:
        state.installments[key] = [ev.amount_due, ev.due_ts, 0, 0, ST_OPEN, 0]
    else:
        rec[I_DUE] = ev.amount_due
        rec[I_DUE_TS] = ev.due_ts
    _prune(state)


def on_paid(state: FeatureState, ev: InstallmentPaid) -> Outcome | None:
    """Apply a payment to its installment (the balance is the caller's business). Returns the
    ``paid_in_full`` outcome when this payment completes it; ``None`` for an unknown id."""
    rec = state.installments.get(installment_key(ev.installment_id))
    if rec is None:
        return None
    was_full = rec[I_PAID] >= rec[I_DUE]
    rec[I_PAID] += ev.amount_paid
    if was_full or rec[I_PAID] < rec[I_DUE]:
        return None
    dpd = _days_late(ev.ts, rec[I_DUE_TS])
    if dpd == 0:
        _resolve(state, rec, ST_ONTIME, ev.ts)
        state.ontime_ts = max(state.ontime_ts, ev.ts)
    else:
        _resolve(state, rec, ST_LATE, ev.ts)
        state.missed_ts = max(state.missed_ts, ev.ts)
        rec[I_DPD] = max(rec[I_DPD], dpd)
        record_dpd(state, ev.ts, dpd)
    out = Outcome(ev.installment_id, "paid_in_full", dpd, rec[I_DUE], rec[I_DUE_TS])
    _prune(state)
    return out


def on_overdue(state: FeatureState, ev: InstallmentOverdue) -> Outcome | None:
    """Record an arrears notice. Returns the ``overdue`` outcome when it raises the
    installment's worst lateness; ``None`` otherwise and for an unknown id (whose lateness
    still counts in ``max_dpd_90d`` and ``days_since_missed``)."""
    record_dpd(state, ev.ts, ev.days_past_due)
    state.missed_ts = max(state.missed_ts, ev.ts)
    rec = state.installments.get(installment_key(ev.installment_id))
    if rec is None or ev.days_past_due <= rec[I_DPD]:
        return None
    rec[I_DPD] = ev.days_past_due
    _resolve(state, rec, ST_LATE, ev.ts)
    _prune(state)
    return Outcome(ev.installment_id, "overdue", ev.days_past_due, rec[I_DUE], rec[I_DUE_TS])


def repayment_counts(state: FeatureState) -> tuple[int, int]:
    """(on time, late) among the :data:`RESOLVED_KEPT` latest resolved installments.

    Examples
    --------
    >>> from features.state import new_state
    >>> repayment_counts(new_state())
    (0, 0)
    """
    inst = state.installments
    ontime = late = 0
    for k in _latest_resolved(state):
        if inst[k][I_STATUS] == ST_ONTIME:
            ontime += 1
        else:
            late += 1
    return ontime, late


def _latest_due(state: FeatureState, now_ts: int) -> list[list[int]]:
    """The :data:`RATIO_LAST` installments with the latest due dates at or before ``now_ts``,
    latest first (the installment id breaks a tie, whatever the order they came in)."""
    items = [(r[I_DUE_TS], k, r) for k, r in state.installments.items() if r[I_DUE_TS] <= now_ts]
    items.sort(reverse=True)
    return [r for _, _, r in items[:RATIO_LAST]]


def paid_due_ratio(state: FeatureState, now_ts: int) -> float:
    """Paid / due (each payment capped at its amount due) over the :data:`RATIO_LAST`
    installments with the latest due dates at or before ``now_ts``; 1.0 when there are none.
    Installments not yet due are left out: being unpaid before the due date is normal.

    Examples
    --------
    >>> from features.state import new_state
    >>> paid_due_ratio(new_state(), 0)
    1.0
    """
    recs = _latest_due(state, now_ts)
    due = sum(r[I_DUE] for r in recs)
    paid = sum(min(r[I_PAID], r[I_DUE]) for r in recs)
    return paid / due if due > 0 else 1.0


def payment_behaviour(state: FeatureState, now_ts: int, cap: float) -> tuple[float, int]:
    """(payment ratio, minimum payments) over the :data:`RATIO_LAST` installments with the
    latest due dates at or before ``now_ts``, the behavioural score's view of how a customer
    repays rather than whether:

    * the payment ratio is paid / due with payments *not* capped at the amount due: a
      transactor who clears the statement balance shows the balance's multiple of the
      minimum, a revolver a little above 1, a minimum payer exactly 1, a short payer below
      it; capped at ``cap``, 1.0 when there are none;
    * minimum payments counts those paid exactly their amount due, no more: a minimum payer
      whose balance keeps climbing is the over-indebted drift that ends in default.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state()
    >>> for i, (due, paid) in enumerate(((1000, 1000), (1000, 5000), (2000, 2000))):
    ...     on_due(s, InstallmentDue(f"d{i}", "u", 0, f"i{i}", due, (i + 1) * DAY_MS, "CNY"))
    ...     _ = on_paid(s, InstallmentPaid(f"p{i}", "u", (i + 1) * DAY_MS, f"i{i}", paid, "CNY"))
    >>> payment_behaviour(s, 3 * DAY_MS, 10.0), payment_behaviour(new_state(), 0, 10.0)
    ((2.0, 2), (1.0, 0))
    """
    recs = _latest_due(state, now_ts)
    due = sum(r[I_DUE] for r in recs)
    paid = sum(r[I_PAID] for r in recs)
    ratio = min(cap, paid / due) if due > 0 else 1.0
    return ratio, sum(1 for r in recs if r[I_PAID] == r[I_DUE] > 0)


def amount_due_trend(state: FeatureState, cap: float) -> float:
    """The amount due of the latest installment issued / that of the installment issued
    :data:`RATIO_LAST` statements before it (by due date): a minimum due is a share of the
    statement balance, so this is how the balance carried moved over about a quarter.
    1.0 with fewer than ``RATIO_LAST + 1`` installments; capped at ``cap``.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state()
    >>> for i, due in enumerate((1000, 1200, 1500, 2500)):
    ...     on_due(s, InstallmentDue(f"d{i}", "u", 0, f"i{i}", due, (i + 1) * DAY_MS, "CNY"))
    >>> amount_due_trend(s, 10.0), amount_due_trend(new_state(), 10.0)
    (2.5, 1.0)
    """
    dues = sorted((r[I_DUE_TS], k, r[I_DUE]) for k, r in state.installments.items())
    if len(dues) <= RATIO_LAST:
        return 1.0
    before = dues[-1 - RATIO_LAST][2]
    return min(cap, dues[-1][2] / before) if before > 0 else cap


def monthly_obligation(state: FeatureState, now_ts: int) -> int:
    """The line's monthly debt service: the mean amount due of the :data:`RATIO_LAST`
    installments with the latest due dates within 30 days of ``now_ts`` (statements are
    monthly), whether paid or not; 0 when there are none.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state()
    >>> on_due(s, InstallmentDue("e1", "u", 0, "i1", 1000, 5 * DAY_MS, "CNY"))
    >>> on_due(s, InstallmentDue("e2", "u", 0, "i2", 3000, 35 * DAY_MS, "CNY"))
    >>> monthly_obligation(s, 10 * DAY_MS), monthly_obligation(new_state(), 0)
    (2000, 0)
    """
    horizon = now_ts + 30 * DAY_MS
    dues = sorted(((r[I_DUE_TS], k, r[I_DUE]) for k, r in state.installments.items()
                   if r[I_DUE_TS] <= horizon), reverse=True)[:RATIO_LAST]
    return sum(d for _, _, d in dues) // len(dues) if dues else 0


def unpaid_due_by(state: FeatureState, ts: int, *, strict: bool) -> int:
    """Unpaid amount of installments due before ``ts`` (``strict``) or at or before it.

    Examples
    --------
    >>> from features.state import new_state
    >>> unpaid_due_by(new_state(), 0, strict=True)
    0
    """
    total = 0
    for r in state.installments.values():
        if r[I_DUE_TS] < ts or (not strict and r[I_DUE_TS] == ts):
            total += max(0, r[I_DUE] - r[I_PAID])
    return total
