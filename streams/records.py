"""Input event records: what core banking and operators publish (DESIGN §2).

Small frozen, slotted dataclasses. Money is integer minor units (fen/cents), time is
integer epoch milliseconds (UTC). Decoding and validation live in :mod:`streams.codec`;
these classes only hold already-valid values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

TRANSACTION_KINDS: Final = ("purchase", "cash_advance", "refund", "inflow")
REPAYMENT_KINDS: Final = ("due", "paid", "overdue")
ACCOUNT_KINDS: Final = ("opened", "income_reported", "liabilities_reported", "closed")
COMMAND_KINDS: Final = ("freeze", "unfreeze", "set_limit")

TransactionKind = Literal["purchase", "cash_advance", "refund", "inflow"]
CommandKind = Literal["freeze", "unfreeze", "set_limit"]


@dataclass(frozen=True, slots=True)
class Transaction:
    """Money moving on the credit line (purchase, cash advance, refund) or into the user's
    linked account (``inflow``: income signal, never touches the credit balance)."""

    event_id: str  #: producer's unique id of this event
    user_id: str  #: the credit line's owner; also the message key
    ts: int  #: event time, epoch ms UTC
    kind: TransactionKind
    amount: int  #: minor units, > 0
    currency: str  #: ISO 4217; must be the deployment's currency
    merchant_category: str = ""  #: MCC or category label ("" for inflows)
    country: str = ""  #: ISO 3166 alpha-2 of the merchant ("" = home)


@dataclass(frozen=True, slots=True)
class InstallmentDue:
    """An installment was issued: ``amount_due`` is to be paid by ``due_ts``."""

    event_id: str
    user_id: str
    ts: int
    installment_id: str
    amount_due: int  #: minor units, > 0
    due_ts: int  #: epoch ms; must not be before ``ts``
    currency: str
    kind: Literal["due"] = "due"


@dataclass(frozen=True, slots=True)
class InstallmentPaid:
    """A payment against an installment (may be partial; may come after the due date)."""

    event_id: str
    user_id: str
    ts: int
    installment_id: str
    amount_paid: int  #: minor units, > 0
    currency: str
    kind: Literal["paid"] = "paid"


@dataclass(frozen=True, slots=True)
class InstallmentOverdue:
    """Core banking's arrears notice: the installment is ``days_past_due`` days late."""

    event_id: str
    user_id: str
    ts: int
    installment_id: str
    days_past_due: int  #: >= 1
    kind: Literal["overdue"] = "overdue"


@dataclass(frozen=True, slots=True)
class AccountOpened:
    event_id: str
    user_id: str
    ts: int
    initial_limit: int  #: minor units, >= 0
    currency: str
    declared_income: int = 0  #: monthly, minor units; 0 = not declared
    kind: Literal["opened"] = "opened"


@dataclass(frozen=True, slots=True)
class IncomeReported:
    event_id: str
    user_id: str
    ts: int
    monthly_income: int  #: minor units, >= 0
    currency: str
    kind: Literal["income_reported"] = "income_reported"


@dataclass(frozen=True, slots=True)
class LiabilitiesReported:
    """Monthly debt service owed elsewhere (credit bureau), for the debt-to-income ratio."""

    event_id: str
    user_id: str
    ts: int
    monthly_liabilities: int  #: minor units, >= 0
    currency: str
    kind: Literal["liabilities_reported"] = "liabilities_reported"


@dataclass(frozen=True, slots=True)
class AccountClosed:
    event_id: str
    user_id: str
    ts: int
    kind: Literal["closed"] = "closed"


@dataclass(frozen=True, slots=True)
class LimitCommand:
    """An operator's override, always audited."""

    event_id: str
    user_id: str
    ts: int
    kind: CommandKind
    operator: str  #: who; must be a known operator id (see the policy file)
    reason: str  #: free text, kept in the audit trail
    new_limit: int = 0  #: minor units; ``set_limit`` only
    currency: str = ""  #: ``set_limit`` only


RepaymentEvent = InstallmentDue | InstallmentPaid | InstallmentOverdue
AccountEvent = AccountOpened | IncomeReported | LiabilitiesReported | AccountClosed
InputEvent = Transaction | RepaymentEvent | AccountEvent | LimitCommand
