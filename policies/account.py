"""The account as the limit policy sees it: status, limit, ladder position and clocks.

All times are event time (epoch ms of the events that changed them); ``0`` means "never"
(event times start in 2000, so ``ts - 0`` always exceeds any cooldown). Money is integer
minor units.

Statuses
--------
``ACTIVE``
    Normal: the policy may raise (within step and cooldown) or cut.
``SUSPENDED``
    No spending: ``limit`` is 0 and ``pre_suspension_limit`` keeps what the ladder restores.
``PROBATION``
    Climbing back: ``stage`` k (1..len(ladder)-1) at ladder[k-1] % of the pre-suspension limit.
``FROZEN``
    An operator hold. ``limit`` keeps the limit to restore and ``frozen_from`` the status to
    return to (``stage`` keeps the probation stage if it was one); downstream must treat a
    FROZEN account's available credit as 0 whatever ``limit`` says.
``HOLD_FOR_REVIEW``
    The line is held: available credit 0, ``limit`` keeps the limit to restore and
    ``frozen_from`` the status to return to. An anomaly hold (``hold_until_ts`` > 0) ends at
    its timeout or by an operator's ``unfreeze``; an arrears hold (``hold_until_ts`` = 0) ends
    when the arrears are paid, or becomes a suspension.
``CLOSED``
    Terminal; limit 0.

Examples
--------
>>> from streams.settings import DEFAULT_POLICY
>>> from policies.spec import load_policy
>>> a = new_account(load_policy(DEFAULT_POLICY), 1_767_225_600_000)
>>> a.status, a.limit
(<Status.ACTIVE: 'ACTIVE'>, 200000)
>>> Account.from_dict(a.to_dict()) == a
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from typing import Any

from policies.spec import Policy


class Status(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    PROBATION = "PROBATION"
    FROZEN = "FROZEN"
    HOLD_FOR_REVIEW = "HOLD_FOR_REVIEW"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Account:
    """One user's credit line, as the policy keeps it (a value in the user's table row)."""

    status: Status
    limit: int  #: minor units; 0 when SUSPENDED or CLOSED
    stage: int  #: probation stage 1..len(ladder)-1 in PROBATION (kept while FROZEN), else 0
    pre_suspension_limit: int  #: what the ladder restores (SUSPENDED/PROBATION), else 0
    last_change_ts: int  #: last change of the limit or the status
    last_cut_ts: int  #: last risk cut or suspension (0 = never)
    last_late_ts: int  #: last late repayment outcome (0 = never)
    status_since_ts: int  #: entry into the current status, or probation stage
    opened_ts: int  #: the ``opened`` event, or first sight of the user
    last_review_ts: int  #: last full evaluation (scheduled reviews count from it)
    frozen_from: Status | None  #: FROZEN only: the status an unfreeze returns to
    ontime_in_stage: int  #: on-time repayments since the probation stage was entered
    limit_override: bool  #: an operator set the limit above the caps; cleared by any cut
    last_raise_ts: int = 0  #: last automatic raise (no cut without new evidence soon after)
    last_hold_ts: int = 0  #: last HOLD_FOR_REVIEW (anomalous spending is not demand)
    hold_until_ts: int = 0  #: HOLD_FOR_REVIEW: when an anomaly hold ends (0: until cured)
    stage_balance: int = 0  #: PROBATION: the balance when the stage was entered
    uncut_limit: int = 0  #: the limit before the risk cuts of the current episode (0: none)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (orjson), exactly reversed by :meth:`from_dict`."""
        return {
            "status": self.status.value,
            "limit": self.limit,
            "stage": self.stage,
            "pre_suspension_limit": self.pre_suspension_limit,
            "last_change_ts": self.last_change_ts,
            "last_cut_ts": self.last_cut_ts,
            "last_late_ts": self.last_late_ts,
            "status_since_ts": self.status_since_ts,
            "opened_ts": self.opened_ts,
            "last_review_ts": self.last_review_ts,
            "frozen_from": None if self.frozen_from is None else self.frozen_from.value,
            "ontime_in_stage": self.ontime_in_stage,
            "limit_override": self.limit_override,
            "last_raise_ts": self.last_raise_ts,
            "last_hold_ts": self.last_hold_ts,
            "hold_until_ts": self.hold_until_ts,
            "stage_balance": self.stage_balance,
            "uncut_limit": self.uncut_limit,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Account:
        """Rebuild from :meth:`to_dict`'s output; ``ValueError`` on anything else. The fields
        added after the first release (those with a default) may be missing: a state stored
        by an older version reads with them at 0.

        Examples
        --------
        >>> Account.from_dict({"status": "ACTIVE"})
        Traceback (most recent call last):
        ...
        ValueError: account: missing keys ['frozen_from', 'last_change_ts', ...]
        """
        names = [f.name for f in fields(cls)]
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = sorted(set(names) - set(d) - optional)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:2])
            more = ", ..." if len(missing) > 2 else ""
            raise ValueError(f"account: missing keys [{shown}{more}]")
        extra = sorted(set(d) - set(names))
        if extra:
            raise ValueError(f"account: unknown keys {extra}")
        values: dict[str, Any] = {}
        for name in names:
            if name not in d:
                continue  # an optional field: its default
            v = d[name]
            if name in ("status", "frozen_from"):
                if v is None and name == "frozen_from":
                    values[name] = None
                    continue
                if not isinstance(v, str) or v not in Status.__members__:
                    raise ValueError(f"account.{name}: not a status: {v!r}")
                values[name] = Status(v)
            elif name == "limit_override":
                if not isinstance(v, bool):
                    raise ValueError(f"account.{name}: not a boolean: {v!r}")
                values[name] = v
            else:
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ValueError(f"account.{name}: not a non-negative integer: {v!r}")
                values[name] = v
        return cls(**values)


def new_account(policy: Policy, ts: int) -> Account:
    """A user seen for the first time without ``opened``: ACTIVE at the policy's default limit.

    Examples
    --------
    >>> from streams.settings import DEFAULT_POLICY
    >>> from policies.spec import load_policy
    >>> new_account(load_policy(DEFAULT_POLICY), 5).opened_ts
    5
    """
    return Account(
        status=Status.ACTIVE,
        limit=policy.limits.default_limit,
        stage=0,
        pre_suspension_limit=0,
        last_change_ts=ts,
        last_cut_ts=0,
        last_late_ts=0,
        status_since_ts=ts,
        opened_ts=ts,
        last_review_ts=ts,
        frozen_from=None,
        ontime_in_stage=0,
        limit_override=False,
    )
