"""``limitstream redrive``'s plan: which dead letters go back to which topic, which cannot."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from features import FeatureConfig
from limitstream.redrive import Redrive, Selection, parse_time, to_record
from policies.engine import Engine, UserState
from policies.processor import REKEYED, Processor, RawRecord
from policies.spec import load_policy
from streams.codec import Limits, encode
from streams.settings import DEFAULT_POLICY

T0 = 1_767_225_600_000


def dead_letters(*records: RawRecord) -> list[dict[str, Any]]:
    """The dead letters the processor makes of ``records``, as read back from the topic."""
    processor = Processor(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                          Limits("CNY"))

    def nobody(uid: str) -> UserState | None:
        return None

    outputs = processor.process(list(records), nobody).outputs
    return [orjson.loads(encode(o.value)) for o in outputs if o.topic == "dead-letter"]


def test_a_dead_letter_goes_back_byte_for_byte_under_its_key() -> None:
    raw = b'{"event_id": "e1", "kind": "purchase"}'
    (dead,) = dead_letters(RawRecord("transactions", 2, 5, b"u1", raw, T0))
    record, why = to_record(dead)
    assert why == "" and record is not None
    assert (record.topic, record.key, record.value) == ("transactions", b"u1", raw)


def test_what_cannot_be_re_driven_says_why() -> None:
    oversized, bad_source = dead_letters(
        RawRecord("transactions", 0, 1, b"u1", b"x" * 300_000, T0),
        RawRecord(REKEYED, 0, 2, b"u1", b"{}", T0, source="nonsense"))
    assert to_record(oversized) == (None, "truncated")
    assert to_record(bad_source) == (None, "no_input_topic")
    assert to_record({"value_b64": "AAAA"}) == (None, "not_a_dead_letter")


def test_the_plan_filters_prints_and_counts() -> None:
    dead = dead_letters(
        RawRecord("transactions", 0, 1, b"u1", b"{oops", T0),
        RawRecord("repayments", 0, 1, b"u2", b"{oops", T0 + 10),
        RawRecord("transactions", 0, 2, b"u3", b'{"kind": "transfer"}', T0 + 20),
        RawRecord("transactions", 0, 3, b"u4", b"y" * 300_000, T0 + 30))
    job, out = Redrive(), io.StringIO()
    selection = Selection(codes=frozenset({"malformed_json", "oversized"}),
                          topics=frozenset({"transactions"}), since_ms=T0)
    records = job.plan([*dead, None], selection, out)
    assert [(r.topic, r.key) for r in records] == [("transactions", b"u1")]
    printed = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(p["key"], p.get("send"), p.get("skipped")) for p in printed] == [
        ("u1", True, None), ("u4", None, "truncated")]
    job.sent = len(records)
    assert job.summary(dry_run=True) == {"read": 5, "selected": 2, "would_send": 1,
                                         "skipped": {"truncated": 1, "not_a_dead_letter": 1}}


@pytest.mark.parametrize(("since", "until", "keys"), [
    (T0 + 10, 0, ["u2", "u3"]), (0, T0 + 10, ["u1"]), (T0 + 5, T0 + 15, ["u2"])])
def test_the_time_window_is_on_the_records_timestamp(since: int, until: int,
                                                      keys: list[str]) -> None:
    dead = dead_letters(*(RawRecord("transactions", 0, i, f"u{i + 1}".encode(), b"{oops",
                                    T0 + 10 * i) for i in range(3)))
    records = Redrive().plan(dead, Selection(since_ms=since, until_ms=until), io.StringIO())
    assert [r.key.decode() for r in records if r.key] == keys


def test_times_are_epoch_ms_or_iso_8601_utc_by_default() -> None:
    assert parse_time("1767225600000") == T0
    assert parse_time("2026-01-01") == T0
    assert parse_time("2026-01-01T08:00:00+08:00") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday")
