"""Input contracts: every kind valid, each way invalid, and agreement with the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.codec import MAX_AMOUNT, BadInput, Limits, decode, derive_id, payload_hash
from streams.records import (
    AccountClosed,
    AccountOpened,
    IncomeReported,
    InstallmentDue,
    InstallmentOverdue,
    InstallmentPaid,
    LiabilitiesReported,
    LimitCommand,
    Transaction,
)
from streams.settings import Settings

SCHEMAS = Path(__file__).resolve().parents[2] / "streams" / "schemas"
LIMITS = Limits(currency="CNY", max_message_bytes=4096)
TS = 1_767_225_600_000
BASE = {"event_id": "e-1", "user_id": "u-1", "ts": TS}

VALID: list[tuple[str, dict[str, Any], type]] = [
    ("transactions", {"kind": "purchase", "amount": 1250, "currency": "CNY",
                      "merchant_category": "5411", "country": "CN"}, Transaction),
    ("transactions", {"kind": "cash_advance", "amount": 50_000, "currency": "CNY"}, Transaction),
    ("transactions", {"kind": "refund", "amount": 300, "currency": "CNY"}, Transaction),
    ("transactions", {"kind": "inflow", "amount": 800_000, "currency": "CNY"}, Transaction),
    ("repayments", {"kind": "due", "installment_id": "i1", "amount_due": 10_000,
                    "due_ts": TS + 86_400_000, "currency": "CNY"}, InstallmentDue),
    ("repayments", {"kind": "paid", "installment_id": "i1", "amount_paid": 10_000,
                    "currency": "CNY"}, InstallmentPaid),
    ("repayments", {"kind": "overdue", "installment_id": "i1", "days_past_due": 5},
     InstallmentOverdue),
    ("account-events", {"kind": "opened", "initial_limit": 1_000_000, "currency": "CNY",
                        "declared_income": 900_000}, AccountOpened),
    ("account-events", {"kind": "opened", "initial_limit": 0, "currency": "CNY"}, AccountOpened),
    ("account-events", {"kind": "income_reported", "monthly_income": 1_200_000,
                        "currency": "CNY"}, IncomeReported),
    ("account-events", {"kind": "liabilities_reported", "monthly_liabilities": 0,
                        "currency": "CNY"}, LiabilitiesReported),
    ("account-events", {"kind": "closed"}, AccountClosed),
    ("limit-commands", {"kind": "freeze", "operator": "ops-1", "reason": "fraud report"},
     LimitCommand),
    ("limit-commands", {"kind": "unfreeze", "operator": "ops-1", "reason": "cleared"},
     LimitCommand),
    ("limit-commands", {"kind": "set_limit", "operator": "ops-1", "reason": "complaint",
                        "new_limit": 500_000, "currency": "CNY"}, LimitCommand),
]


def _schema(topic: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{topic}.json").read_text())


@pytest.mark.parametrize(("topic", "fields", "cls"), VALID,
                         ids=[f"{t}:{f['kind']}" for t, f, _ in VALID])
def test_valid_kinds_decode_and_match_schema(topic: str, fields: dict[str, Any],
                                             cls: type) -> None:
    value = {**BASE, **fields}
    event = decode(topic, orjson.dumps(value), LIMITS)
    assert isinstance(event, cls)
    assert event.user_id == "u-1" and event.ts == TS and event.kind == fields["kind"]
    jsonschema.validate(value, _schema(topic))


# (mutation, expected code): applied to every valid kind that has the field.
INVALID = [
    ("drop:event_id", "missing_field"),
    ("drop:user_id", "missing_field"),
    ("drop:ts", "missing_field"),
    ("set:ts=1767225600", "out_of_range"),  # seconds, not milliseconds
    ("set:ts=\"1767225600000\"", "wrong_type"),
    ("set:user_id=\"\"", "empty_field"),
    ("set:user_id=\"u 1\"", "bad_format"),
    ("set:user_id=123", "wrong_type"),
    ("set:event_id=\"" + "x" * 200 + "\"", "too_long"),
]
MONEY_FIELDS = ("amount", "amount_due", "amount_paid", "initial_limit", "monthly_income",
                "monthly_liabilities", "new_limit")


def _mutate(value: dict[str, Any], mutation: str) -> dict[str, Any]:
    op, _, arg = mutation.partition(":")
    v = dict(value)
    if op == "drop":
        v.pop(arg)
    else:
        name, _, raw = arg.partition("=")
        v[name] = json.loads(raw)
    return v


@pytest.mark.parametrize(("topic", "fields", "cls"), VALID,
                         ids=[f"{t}:{f['kind']}" for t, f, _ in VALID])
@pytest.mark.parametrize(("mutation", "code"), INVALID)
def test_each_invalid_way_is_rejected_by_code_and_schema(
        topic: str, fields: dict[str, Any], cls: type, mutation: str, code: str) -> None:
    value = _mutate({**BASE, **fields}, mutation)
    with pytest.raises(BadInput) as exc:
        decode(topic, orjson.dumps(value), LIMITS)
    assert exc.value.code == code
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, _schema(topic))


@pytest.mark.parametrize(("topic", "fields", "cls"),
                         [v for v in VALID if any(f in v[1] for f in MONEY_FIELDS)])
@pytest.mark.parametrize(("bad", "code"), [
    (-5, "out_of_range"), (MAX_AMOUNT + 1, "out_of_range"), (12.5, "wrong_type"),
    ("100", "wrong_type"), (True, "wrong_type"), (None, "missing_field"),
])
def test_money_fields_are_positive_bounded_integers(topic: str, fields: dict[str, Any],
                                                    cls: type, bad: Any, code: str) -> None:
    name = next(f for f in MONEY_FIELDS if f in fields)
    value = {**BASE, **fields, name: bad}
    with pytest.raises(BadInput) as exc:
        decode(topic, orjson.dumps(value), LIMITS)
    assert (exc.value.code, exc.value.field) == (code, name)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, _schema(topic))


@pytest.mark.parametrize("fields", [f for t, f, _ in VALID if t == "transactions"])
def test_zero_amount_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(BadInput, match="amount=0"):
        decode("transactions", orjson.dumps({**BASE, **fields, "amount": 0}), LIMITS)


@pytest.mark.parametrize(("topic", "fields", "cls"), [v for v in VALID if "currency" in v[1]])
def test_wrong_currency_rejected(topic: str, fields: dict[str, Any], cls: type) -> None:
    with pytest.raises(BadInput) as exc:
        decode(topic, orjson.dumps({**BASE, **fields, "currency": "USD"}), LIMITS)
    assert exc.value.code == "wrong_currency"


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "malformed_json"),
    (b'{"amount": NaN}', "malformed_json"),  # JSON has no NaN: orjson refuses it
    (b"[1, 2]", "not_an_object"),
    (b'"purchase"', "not_an_object"),
    (b"", "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
])
def test_malformed_payloads(raw: bytes, code: str) -> None:
    with pytest.raises(BadInput) as exc:
        decode("transactions", raw, LIMITS)
    assert exc.value.code == code


def test_nan_and_infinity_as_numbers_are_rejected() -> None:
    # Python's json writes NaN/Infinity literals; they are not JSON and never reach a sum.
    for lit in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        raw = b'{"event_id":"e","user_id":"u","ts":1767225600000,"kind":"purchase",' \
              b'"currency":"CNY","amount":' + lit + b"}"
        with pytest.raises(BadInput) as exc:
            decode("transactions", raw, LIMITS)
        assert exc.value.code in {"malformed_json", "not_finite", "wrong_type"}


def test_unknown_kind_and_kind_of_another_topic() -> None:
    for kind in ("transfer", "due", None, 7):
        raw = orjson.dumps({**BASE, "kind": kind, "amount": 1, "currency": "CNY"})
        with pytest.raises(BadInput) as exc:
            decode("transactions", raw, LIMITS)
        assert exc.value.code == "unknown_kind"


def test_oversized_message_is_rejected_unread() -> None:
    raw = orjson.dumps({**BASE, "kind": "purchase", "amount": 1, "currency": "CNY",
                        "pad": "x" * 5000})
    with pytest.raises(BadInput) as exc:
        decode("transactions", raw, LIMITS)
    assert exc.value.code == "oversized"


def test_tombstone_is_rejected() -> None:
    with pytest.raises(BadInput) as exc:
        decode("repayments", None, LIMITS)
    assert exc.value.code == "empty_message"


def test_due_before_issue_is_rejected() -> None:
    value = {**BASE, "kind": "due", "installment_id": "i", "amount_due": 5,
             "due_ts": TS - 1, "currency": "CNY"}
    with pytest.raises(BadInput) as exc:
        decode("repayments", orjson.dumps(value), LIMITS)
    assert (exc.value.code, exc.value.field) == ("out_of_range", "due_ts")


def test_error_dict_is_bounded_and_names_the_rule() -> None:
    err = BadInput("too_long", "x", "user_id", "y" * 1000).as_dict()
    assert err["code"] == "too_long" and err["field"] == "user_id"
    assert len(err["value"]) <= 201


def test_derived_ids_are_deterministic_and_separated() -> None:
    assert derive_id("ab", "c") == derive_id("ab", "c")
    assert derive_id("ab", "c") != derive_id("a", "bc")


def test_every_topic_has_a_schema() -> None:
    names = {p.stem for p in SCHEMAS.glob("*.json")}
    assert names == {"transactions", "repayments", "account-events", "limit-commands",
                     "limit-changes", "account-status", "decisions", "dead-letter"}
    for p in SCHEMAS.glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(p.read_text()))


def test_the_limits_follow_the_settings() -> None:
    settings = Settings.from_env({"LIMITSTREAM_CURRENCY": "EUR",
                                  "LIMITSTREAM_MAX_MESSAGE_BYTES": "8192",
                                  "LIMITSTREAM_MAX_KEY_BYTES": "256",
                                  "LIMITSTREAM_MAX_CLOCK_SKEW_MS": "3600000",
                                  "LIMITSTREAM_MAX_REQUEST_BYTES": "400000"})
    assert Limits.from_settings(settings) == Limits("EUR", 8192, 256, 3_600_000, 100_000)
    # The defaults agree: code that builds Limits by hand gets the deployment defaults.
    assert Limits.from_settings(Settings()) == Limits("CNY")


def test_an_errors_value_and_message_are_cut() -> None:
    error = BadInput("processing_error", "y" * 5000, "f", "v" * 5000).as_dict()
    assert error["value"] == "v" * 200 + "…"
    assert error["message"] == "y" * 1000 + "…"


def test_the_payload_hash_covers_every_field() -> None:
    tx = Transaction("e1", "u1", TS, "purchase", 100, "CNY", "5411", "CN")
    variants = [Transaction("e1", "u1", TS, "refund", 100, "CNY", "5411", "CN"),
                Transaction("e1", "u1", TS, "purchase", 101, "CNY", "5411", "CN"),
                Transaction("e1", "u1", TS, "purchase", 100, "CNY", "5412", "CN"),
                Transaction("e1", "u1", TS, "purchase", 100, "CNY", "5411", ""),
                Transaction("e1", "u1", TS + 1, "purchase", 100, "CNY", "5411", "CN")]
    assert len({payload_hash(v) for v in [tx, *variants]}) == 1 + len(variants)
    assert payload_hash(tx) == payload_hash(Transaction("e1", "u1", TS, "purchase", 100, "CNY",
                                                        "5411", "CN"))
