"""Transaction anomaly score: how unusual a spend is *for this user*, in [0, 1].

Why not a River ``HalfSpaceTrees`` (DESIGN §5 names it as an example)? A detector learnt online
over all users in a worker makes a user's score depend on which other users share the
worker's partitions and on how far the model had learnt when the worker crashed: a replay of
the same log, or a rebalance, would give other scores and other decisions, and the model is
not part of the exactly-once user state. A per-user tree ensemble would fit in the state
only with very few trees and would need a random seed per user. So the score here is a
deterministic function of the transaction and of the user's own 30-day history already in the
state: the same log always gives the same scores, byte for byte.

Each signal is in [0, 1]; the score is their weighted sum (weights sum to 1):

========  ======  ==================================================================
signal    weight  value
========  ======  ==================================================================
amount    0.35    log10(amount / 30 d mean spend), clipped to [0, 1]: 10x the mean -> 1
category  0.15    1 if the merchant category was not seen in the last 30 d
country   0.15    foreign and not seen in 30 d -> 1; foreign, seen -> 0.25; home -> 0
night     0.10    at local night: 1 - the user's 30 d night share (night owls are normal)
burst     0.15    (spends in the last hour - 2 - 3 x usual hourly rate) / 8, clipped
cash      0.10    a cash advance: 1 - the user's 30 d cash-advance share
========  ======  ==================================================================

Thin history: the sum is scaled by ``min(1, n / 10)``, ``n`` the user's spends in 30 d, so
a first transaction scores 0 and a sparse history cannot make a high score by itself. The
score is computed *before* the transaction enters the windows and is rounded to 1e-4 (the
state stores it as an integer).

Examples
--------
>>> from features.state import new_state
>>> score(new_state(), 10_000, cash=False, night=True, country="US", category=5411)
0.0
"""

from __future__ import annotations

import math
from typing import Final

from features.state import CASH, NIGHT, SUM, FeatureState, N
from features.windows import DAYS_SPAN

W_AMOUNT: Final = 0.35
W_CATEGORY: Final = 0.15
W_COUNTRY: Final = 0.15
W_NIGHT: Final = 0.10
W_BURST: Final = 0.15
W_CASH: Final = 0.10
#: Spends in 30 d at which the history is trusted fully.
FULL_HISTORY: Final = 10
#: A foreign country already used in the last 30 d still counts a little.
SEEN_COUNTRY: Final = 0.25
#: Spends in one hour tolerated on top of 3x the usual rate, and the excess that gives 1.
BURST_FREE: Final = 2
BURST_FULL: Final = 8
#: Scores are held as integers in these units.
SCALE: Final = 10_000


def _clip(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def score_units(state: FeatureState, amount: int, *, cash: bool, night: bool, country: str,
                category: int) -> int:
    """:func:`score` in 1e-4 units (what the state stores). ``country`` is "" unless the
    merchant is foreign; ``category`` is the crc32 of the merchant category, or -1 for none."""
    t = state.totals
    n, total = t[N], t[SUM]
    if n <= 0 or total <= 0:
        return 0
    raw = 0.0
    ratio = amount * n / total
    if ratio > 1.0:  # at or below the mean: nothing unusual (and no log of 0)
        raw += W_AMOUNT * min(1.0, math.log10(ratio))
    if category >= 0 and category not in state.categories:
        raw += W_CATEGORY
    if country:
        raw += W_COUNTRY * (SEEN_COUNTRY if country in state.countries else 1.0)
    if night:
        raw += W_NIGHT * _clip(1.0 - t[NIGHT] / total)
    if cash:
        raw += W_CASH * _clip(1.0 - t[CASH] / total)
    excess = -BURST_FREE - 3.0 * n / (DAYS_SPAN * 24)  # the usual hourly rate is n / 720
    for b in state.minutes.values():
        excess += b[0]
    if excess > 0.0:
        raw += W_BURST * min(1.0, excess / BURST_FULL)
    confidence = min(1.0, n / FULL_HISTORY)
    return round(confidence * raw * SCALE)


def score(state: FeatureState, amount: int, *, cash: bool, night: bool, country: str,
          category: int) -> float:
    """The anomaly score in [0, 1] of a spend of ``amount`` against ``state``'s history.

    Examples
    --------
    >>> from features.state import new_state
    >>> s = new_state(); s.totals[0], s.totals[1] = 20, 20 * 1_000    # 20 spends of 10.00
    >>> score(s, 1_000, cash=False, night=False, country="", category=-1)
    0.0
    >>> score(s, 100_000, cash=False, night=False, country="", category=-1)   # 100x the mean
    0.35
    >>> score(s, 100_000, cash=True, night=True, country="US", category=1)    # all signals
    0.85
    """
    return score_units(state, amount, cash=cash, night=night, country=country,
                       category=category) / SCALE
