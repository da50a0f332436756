"""What an installment event resolved: the input of the delayed-label join and of the policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Outcome:
    """An installment reached a resolution with this event.

    ``paid_in_full``: the amount due is now fully paid (``days_past_due`` says how late, 0 if
    by the due date). ``overdue``: core banking reported arrears of ``days_past_due`` days
    (emitted for each overdue notice that raises the installment's worst lateness).
    """

    installment_id: str
    kind: Literal["paid_in_full", "overdue"]
    days_past_due: int
    amount_due: int  #: minor units
    due_ts: int  #: epoch ms
