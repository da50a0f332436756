"""The event-time merge of co-partitioned topics (streams/event_order.py)."""

from __future__ import annotations

import pytest

from streams.event_order import UNREADABLE_TS, CaughtUp, EventTimeMerge, event_ts

TOPICS = ("transactions", "repayments", "account-events")
ALL_CAUGHT_UP = {t: True for t in TOPICS}


def merge(max_idle_ms: int = 100, max_buffered: int = 100) -> EventTimeMerge[str]:
    return EventTimeMerge(TOPICS, max_idle_ms, max_buffered)


def caught(flags: dict[str, bool]) -> CaughtUp:
    return lambda topic, partition: flags[topic]


def test_smallest_ts_first_ties_by_topic_order_then_offset() -> None:
    m = merge()
    m.add("account-events", 0, 5, "a5")
    m.add("transactions", 0, 5, "t5")
    m.add("transactions", 0, 5, "t5-next")
    m.add("repayments", 0, 3, "r3")
    assert m.release(0, caught(ALL_CAUGHT_UP)).items == ["r3", "t5", "t5-next", "a5"]
    assert len(m) == 0


def test_a_partition_keeps_its_offset_order_whatever_the_ts() -> None:
    m = merge()
    m.add("transactions", 0, 9, "t9")
    m.add("transactions", 0, 1, "t1")
    m.add("repayments", 0, 5, "r5")
    assert m.drain() == ["r5", "t9", "t1"]


def test_an_empty_partition_that_is_not_caught_up_holds_its_group_until_the_idle_bound() -> None:
    m = merge(max_idle_ms=100)
    m.add("transactions", 0, 10, "t10")
    m.add("transactions", 1, 10, "other-group")
    lagging = caught({"transactions": True, "repayments": False, "account-events": True})
    # Partition 1 waits for its repayments too; nothing is released before the bound.
    assert m.release(1_000, lagging).items == []
    assert m.deadline() == 1_100
    assert m.release(1_099, lagging).items == []
    m.add("repayments", 0, 4, "r4")  # it came in time: applied first
    out = m.release(1_099, lagging)
    assert out.items == ["r4"] and out.idle_timeout == 0
    # Partition 1 has waited its bound; partition 0's repayments came, so its wait for the
    # next one starts again from then.
    late = m.release(1_100, lagging)
    assert late.items == ["other-group"] and late.idle_timeout == 1
    assert m.deadline() == 1_199
    later = m.release(1_199, lagging)
    assert later.items == ["t10"] and later.idle_timeout == 1
    assert m.deadline() is None and len(m) == 0


def test_a_caught_up_partition_holds_nobody_back() -> None:
    m = merge(max_idle_ms=10_000)
    m.add("account-events", 3, 7, "a7")
    assert m.release(0, caught(ALL_CAUGHT_UP)).items == ["a7"]


def test_an_unreadable_ts_goes_at_once() -> None:
    m = merge(max_idle_ms=10_000)
    m.add("transactions", 0, UNREADABLE_TS, "junk")
    m.add("transactions", 0, 50, "t50")
    out = m.release(0, caught({t: False for t in TOPICS}))
    assert out.items == ["junk"] and len(m) == 1


def test_past_the_cap_the_oldest_head_goes_and_is_counted() -> None:
    m = merge(max_idle_ms=10_000, max_buffered=2)
    m.add("transactions", 0, 30, "t30")
    m.add("repayments", 1, 20, "r20")
    m.add("account-events", 2, 25, "a25")
    out = m.release(0, caught({t: False for t in TOPICS}))
    assert out.items == ["r20"] and out.buffer_cap == 1 and len(m) == 2


def test_clear_drops_everything() -> None:
    m = merge()
    m.add("transactions", 0, 1, "t1")
    m.release(0, caught({t: False for t in TOPICS}))
    assert m.clear() == ["t1"]
    assert len(m) == 0 and m.deadline() is None and m.drain() == []


def test_drain_merges_the_groups_by_event_time_too() -> None:
    m = merge()
    m.add("transactions", 0, 30, "p0-t30")
    m.add("transactions", 1, 10, "p1-t10")
    m.add("repayments", 0, 20, "p0-r20")
    m.add("transactions", 1, 40, "p1-t40")
    assert m.drain() == ["p1-t10", "p0-r20", "p0-t30", "p1-t40"]


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventTimeMerge(TOPICS, 0, 0)


@pytest.mark.parametrize(("value", "ts"), [
    (b'{"ts": 1767225600000}', 1_767_225_600_000),
    (b'{"ts": true}', UNREADABLE_TS),
    (b'{"ts": -5}', UNREADABLE_TS),
    (b'{"ts": 1.5}', UNREADABLE_TS),
    (b'[1, 2]', UNREADABLE_TS),
    (b"\xff\xfe", UNREADABLE_TS),
    (None, UNREADABLE_TS),
    (b'{"ts": 1767225600000, "pad": "' + b"x" * 100 + b'"}', UNREADABLE_TS),
])
def test_event_ts(value: bytes | None, ts: int) -> None:
    assert event_ts(value, 100) == ts
