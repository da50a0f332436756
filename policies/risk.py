"""The risk input of the policy: one shape whether a model or the rules produced it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Risk:
    """A probability of default and where it came from.

    ``contributions`` are ``(feature, contribution)`` pairs sorted by absolute value, largest
    first (at most 5): for the logistic model, weight x standardised value; for the rules, each
    rule's share of the score. ``fallback_reason`` is the reason code saying why the rules
    decided instead of the model (cold, below the quality floor, drift), or ``""``.
    """

    pd: float
    source: Literal["model", "rules"]
    model_version: str
    fallback_reason: str = ""
    contributions: tuple[tuple[str, float], ...] = ()
