"""Strict decoding of input messages, and encoding of outputs.

Every rejection is a :class:`BadInput` naming the rule broken, the field and the value, so a
core-banking team reading ``dead-letter`` knows what to fix.

Examples
--------
>>> limits = Limits(currency="CNY")
>>> raw = b'{"event_id":"e1","user_id":"u1","ts":1767225600000,"kind":"purchase",'
>>> raw += b'"amount":1250,"currency":"CNY","merchant_category":"5411"}'
>>> decode("transactions", raw, limits).amount
1250
>>> try:
...     decode("transactions", raw.replace(b"1250", b"-5"), limits)
... except BadInput as e:
...     print(e.code, e.field)
out_of_range amount
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from streams.records import (
    ACCOUNT_KINDS,
    COMMAND_KINDS,
    REPAYMENT_KINDS,
    TRANSACTION_KINDS,
    AccountClosed,
    AccountOpened,
    IncomeReported,
    InputEvent,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    LiabilitiesReported,
    LimitCommand,
    Transaction,
)
from streams.settings import Settings

#: Amounts above this (10^12 minor units: ten billion in major units) are absurd for a
#: consumer credit line and rejected rather than allowed to poison sums.
MAX_AMOUNT: Final = 10**12
#: Event time must fall inside [2000-01-01, 2100-01-01): anything else is a unit error
#: (seconds or microseconds instead of milliseconds) or garbage.
MIN_TS: Final = 946_684_800_000
MAX_TS: Final = 4_102_444_800_000
MAX_ID_LEN: Final = 128
MAX_TEXT_LEN: Final = 512
MAX_DAYS_PAST_DUE: Final = 3650
#: A dead letter's error quotes at most this many characters of the value and the message:
#: enough to see what is wrong; the raw bytes travel beside it.
MAX_ERROR_VALUE: Final = 200
MAX_ERROR_MESSAGE: Final = 1_000
_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:@/-]+$")
_COUNTRY_RE: Final = re.compile(r"^[A-Z]{2}$")

#: The logical kind of each input topic (the settings may rename the topics themselves).
TOPIC_KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "transactions": TRANSACTION_KINDS,
    "repayments": REPAYMENT_KINDS,
    "account-events": ACCOUNT_KINDS,
    "limit-commands": COMMAND_KINDS,
}


class BadInput(ValueError):
    """An input message that cannot be applied: the reason goes to ``dead-letter``."""

    def __init__(self, code: str, message: str, field: str = "", value: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        value = self.value if isinstance(self.value, (int, str, type(None))) else repr(self.value)
        if isinstance(value, str) and len(value) > MAX_ERROR_VALUE:
            value = value[:MAX_ERROR_VALUE] + "…"
        message = str(self)  # an exception's text may quote the input at any length
        if len(message) > MAX_ERROR_MESSAGE:
            message = message[:MAX_ERROR_MESSAGE] + "…"
        return {"code": self.code, "field": self.field, "value": value, "message": message}


@dataclass(frozen=True, slots=True)
class Limits:
    """The deployment-specific bounds input must respect, and the bound on what a dead letter
    may carry (the defaults are the settings' defaults; see :meth:`from_settings`)."""

    currency: str
    #: Larger values go to dead-letter unread.
    max_message_bytes: int = 16_384
    #: Larger keys go to dead-letter unread.
    max_key_bytes: int = 1_024
    #: An event whose ``ts`` is further than this ahead of its record's timestamp is refused.
    max_clock_skew_ms: int = 86_400_000
    #: No dead letter (key and encoded value) is larger: beyond it the raw bytes are cut.
    dead_letter_max_bytes: int = 250_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.currency, settings.max_message_bytes, settings.max_key_bytes,
                   settings.max_clock_skew_ms, settings.dead_letter_max_bytes)


def _field(obj: Mapping[str, Any], name: str, optional: bool = False) -> Any:
    if name not in obj or obj[name] is None:
        if optional:
            return None
        raise BadInput("missing_field", f"required field {name!r} is missing", name)
    return obj[name]


def _str(obj: Mapping[str, Any], name: str, *, optional: bool = False, max_len: int = MAX_ID_LEN,
         pattern: re.Pattern[str] | None = _ID_RE) -> str:
    value = _field(obj, name, optional)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput("wrong_type", f"{name} must be a string, got {type(value).__name__}",
                       name, value)
    if not value and not optional:
        raise BadInput("empty_field", f"{name} must not be empty", name, value)
    if len(value) > max_len:
        raise BadInput("too_long", f"{name} is {len(value)} characters, at most {max_len}",
                       name, value)
    if value and pattern is not None and not pattern.match(value):
        raise BadInput("bad_format", f"{name} has characters outside {pattern.pattern}",
                       name, value)
    return value


def _int(obj: Mapping[str, Any], name: str, lo: int, hi: int, *, optional: bool = False) -> int:
    value = _field(obj, name, optional)
    if value is None:
        return 0
    # bool is an int subclass in Python; a JSON true is never an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput("not_finite", f"{name} must be a finite integer", name, value)
        raise BadInput("wrong_type",
                       f"{name} must be an integer (minor units / epoch ms), got "
                       f"{type(value).__name__}", name, value)
    if not lo <= value <= hi:
        raise BadInput("out_of_range", f"{name}={value} is outside [{lo}, {hi}]", name, value)
    return value


def _money(obj: Mapping[str, Any], name: str, *, allow_zero: bool = False) -> int:
    return _int(obj, name, 0 if allow_zero else 1, MAX_AMOUNT)


def _currency(obj: Mapping[str, Any], limits: Limits) -> str:
    value = _str(obj, "currency", pattern=None, max_len=3)
    if value != limits.currency:
        raise BadInput("wrong_currency",
                       f"currency {value!r} is not this deployment's {limits.currency!r}",
                       "currency", value)
    return value


def _common(obj: Mapping[str, Any]) -> tuple[str, str, int]:
    return _str(obj, "event_id"), _str(obj, "user_id"), _int(obj, "ts", MIN_TS, MAX_TS)


def _transaction(o: Mapping[str, Any], limits: Limits) -> InputEvent:
    eid, uid, ts = _common(o)
    country = _str(o, "country", optional=True, max_len=2, pattern=_COUNTRY_RE)
    return Transaction(eid, uid, ts, o["kind"], _money(o, "amount"), _currency(o, limits),
                       _str(o, "merchant_category", optional=True, max_len=32), country)


def _repayment(o: Mapping[str, Any], limits: Limits) -> InputEvent:
    eid, uid, ts = _common(o)
    inst = _str(o, "installment_id")
    kind = o["kind"]
    if kind == "due":
        due_ts = _int(o, "due_ts", MIN_TS, MAX_TS)
        if due_ts < ts:
            raise BadInput("out_of_range", f"due_ts={due_ts} is before ts={ts}", "due_ts", due_ts)
        return InstallmentDue(eid, uid, ts, inst, _money(o, "amount_due"), due_ts,
                              _currency(o, limits))
    if kind == "paid":
        return InstallmentPaid(eid, uid, ts, inst, _money(o, "amount_paid"), _currency(o, limits))
    return InstallmentOverdue(eid, uid, ts, inst, _int(o, "days_past_due", 1, MAX_DAYS_PAST_DUE))


def _account(o: Mapping[str, Any], limits: Limits) -> InputEvent:
    eid, uid, ts = _common(o)
    kind = o["kind"]
    if kind == "opened":
        return AccountOpened(eid, uid, ts, _money(o, "initial_limit", allow_zero=True),
                             _currency(o, limits),
                             _int(o, "declared_income", 0, MAX_AMOUNT, optional=True))
    if kind == "income_reported":
        return IncomeReported(eid, uid, ts, _money(o, "monthly_income", allow_zero=True),
                              _currency(o, limits))
    if kind == "liabilities_reported":
        return LiabilitiesReported(eid, uid, ts, _money(o, "monthly_liabilities", allow_zero=True),
                                   _currency(o, limits))
    return AccountClosed(eid, uid, ts)


def _command(o: Mapping[str, Any], limits: Limits) -> InputEvent:
    eid, uid, ts = _common(o)
    kind = o["kind"]
    operator = _str(o, "operator", max_len=64)
    reason = _str(o, "reason", max_len=MAX_TEXT_LEN, pattern=None)
    if kind == "set_limit":
        return LimitCommand(eid, uid, ts, kind, operator, reason,
                            _money(o, "new_limit", allow_zero=True), _currency(o, limits))
    return LimitCommand(eid, uid, ts, kind, operator, reason)


_DECODERS: Final[Mapping[str, Callable[[Mapping[str, Any], Limits], InputEvent]]] = {
    "transactions": _transaction,
    "repayments": _repayment,
    "account-events": _account,
    "limit-commands": _command,
}


def decode(logical_topic: str, raw: bytes | None, limits: Limits) -> InputEvent:
    """Decode and validate one message of ``logical_topic`` (``transactions``, ...).

    Raises :class:`BadInput` on anything that is not a valid event of that topic.
    """
    if raw is None:
        raise BadInput("empty_message", "message has no value (tombstone?)")
    if len(raw) > limits.max_message_bytes:
        raise BadInput("oversized", f"message is {len(raw)} bytes, at most "
                       f"{limits.max_message_bytes}", "", len(raw))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput("malformed_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadInput("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    kinds = TOPIC_KINDS[logical_topic]
    if kind not in kinds:
        raise BadInput("unknown_kind", f"kind {kind!r} is not one of {', '.join(kinds)} "
                       f"on {logical_topic}", "kind", kind)
    return _DECODERS[logical_topic](obj, limits)


def derive_id(*parts: str | int) -> str:
    """A deterministic output id: the same inputs give the same id on every replay.

    >>> derive_id("u1", "e1", "limit") == derive_id("u1", "e1", "limit")
    True
    >>> len(derive_id("x"))
    32
    """
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x1f")  # unit separator: ("ab","c") and ("a","bc") differ
    return h.hexdigest()


def encode(obj: Any) -> bytes:
    """Encode an output (a dict or a dataclass) as compact JSON with sorted keys, so the
    same decision is the same bytes in the worker and in the replay."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def raw_b64(raw: bytes | None) -> str:
    return base64.b64encode(raw or b"").decode("ascii")


def payload_hash(event: InputEvent) -> str:
    """A short hash of an event's content (every field, the kind included), kept beside its
    ``event_id`` in the user's state to tell a redelivery from a conflicting duplicate.

    Eight bytes: it only has to tell apart payloads sent under one ``event_id``.

    >>> from streams.records import AccountClosed
    >>> a, b = AccountClosed("e1", "u1", 1767225600000), AccountClosed("e1", "u1", 1767225600001)
    >>> payload_hash(a) == payload_hash(AccountClosed("e1", "u1", 1767225600000))
    True
    >>> len(payload_hash(a))
    16
    >>> payload_hash(a) == payload_hash(b)
    False
    """
    return hashlib.blake2b(orjson.dumps(event, option=orjson.OPT_SORT_KEYS),
                           digest_size=8).hexdigest()
