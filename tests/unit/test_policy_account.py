"""The account record: exact JSON round trip, strict decoding."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from policies.account import Account, Status, new_account
from policies.spec import load_policy
from streams.settings import DEFAULT_POLICY

POLICY = load_policy(DEFAULT_POLICY)


def _frozen() -> Account:
    return dataclasses.replace(new_account(POLICY, 1_767_225_600_000), status=Status.FROZEN,
                               frozen_from=Status.PROBATION, stage=2, limit=123_456,
                               pre_suspension_limit=999_999, limit_override=True)


@pytest.mark.parametrize("acc", [new_account(POLICY, 1_767_225_600_000), _frozen()])
def test_round_trip_through_orjson_is_exact(acc: Account) -> None:
    raw = orjson.dumps(acc.to_dict())
    back = Account.from_dict(orjson.loads(raw))
    assert back == acc
    assert orjson.dumps(back.to_dict()) == raw


def test_new_account_is_active_at_the_default_limit() -> None:
    acc = new_account(POLICY, 7)
    assert (acc.status, acc.limit, acc.stage, acc.frozen_from) == (Status.ACTIVE, 200_000, 0,
                                                                   None)
    assert acc.last_change_ts == acc.status_since_ts == acc.opened_ts == acc.last_review_ts == 7


@pytest.mark.parametrize(("key", "value"), [
    ("status", "ACTIVATED"),
    ("frozen_from", 3),
    ("limit", -1),
    ("limit", 1.5),
    ("limit", True),
    ("stage", "1"),
    ("limit_override", 1),
])
def test_from_dict_rejects_bad_values(key: str, value: Any) -> None:
    d = new_account(POLICY, 1).to_dict()
    d[key] = value
    with pytest.raises(ValueError, match=key):
        Account.from_dict(d)


def test_from_dict_rejects_missing_and_unknown_keys() -> None:
    d = new_account(POLICY, 1).to_dict()
    with pytest.raises(ValueError, match="unknown"):
        Account.from_dict({**d, "colour": "red"})
    del d["limit"]
    with pytest.raises(ValueError, match="missing"):
        Account.from_dict(d)


def test_a_state_stored_before_the_hold_fields_reads_with_them_at_zero() -> None:
    acc = new_account(load_policy(DEFAULT_POLICY), 1_767_225_600_000)
    old = acc.to_dict()
    for key in ("last_raise_ts", "last_hold_ts", "hold_until_ts", "stage_balance",
                "uncut_limit"):
        del old[key]
    assert Account.from_dict(old) == acc
    held = {**acc.to_dict(), "status": "HOLD_FOR_REVIEW", "frozen_from": "ACTIVE",
            "hold_until_ts": 5}
    assert Account.from_dict(held).status is Status.HOLD_FOR_REVIEW
