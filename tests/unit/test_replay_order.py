"""The replay applies the worker's event-time order, whatever the order of the log's lines."""

from __future__ import annotations

from typing import Any

import orjson

from features import FeatureConfig
from lab.replay import Replay
from lab.simulate import SimConfig, simulate
from policies.engine import DECISIONS, Engine
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord
from streams.settings import DEFAULT_POLICY

T0 = 1_767_225_600_000
DAY = 86_400_000


def replay(log: list[LogRecord]) -> list[tuple[str, str, bytes]]:
    r = Replay(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()), Limits("CNY"),
               partitions=4)
    return [(o.topic, o.key, orjson.dumps(o.value, option=orjson.OPT_SORT_KEYS))
            for o in r.run(log)]


def rec(topic: str, value: dict[str, Any]) -> LogRecord:
    return LogRecord(topic, value["user_id"].encode(), orjson.dumps(value))


def test_a_log_published_topic_by_topic_replays_as_the_time_ordered_log() -> None:
    log = [LogRecord(line.topic, line.key.encode(), orjson.dumps(line.value))
           for line in simulate(SimConfig(users=40, days=60, seed=3))]
    by_topic = sorted(log, key=lambda r: r.topic != "transactions")  # stable: topic by topic
    assert by_topic != log
    assert replay(by_topic) == replay(log)


def test_an_event_applied_after_a_later_one_is_flagged_on_its_decision() -> None:
    uid = "u-late"
    log = [
        rec("account-events", {"event_id": "o", "user_id": uid, "ts": T0, "kind": "opened",
                               "initial_limit": 500_000, "currency": "CNY"}),
        # Upstream wrote the commands out of order: the unfreeze comes after a later freeze.
        rec("limit-commands", {"event_id": "c2", "user_id": uid, "ts": T0 + 5 * DAY,
                               "kind": "freeze", "operator": "ops-1", "reason": "fraud check"}),
        rec("limit-commands", {"event_id": "c1", "user_id": uid, "ts": T0 + 3 * DAY,
                               "kind": "unfreeze", "operator": "ops-1", "reason": "cleared"}),
    ]
    decisions = [orjson.loads(v) for t, _, v in replay(log) if t == DECISIONS]
    flagged = {d["trigger_event_id"]: d.get("out_of_order", False) for d in decisions}
    assert flagged == {"o": False, "c2": False, "c1": True}



def test_a_future_dated_record_does_not_hold_back_its_topic_partition() -> None:
    """A ts far ahead of the record's timestamp is refused (``ts_in_future``); in the merge it
    goes at once, so the records behind it on its topic-partition keep their event-time place
    among the other topics' records (held behind a 2099 ts, the purchase would be applied
    after a later freeze)."""
    uid = "u-clock"

    def stamped(topic: str, value: dict[str, Any], timestamp_ms: int) -> LogRecord:
        return LogRecord(topic, uid.encode(), orjson.dumps({"user_id": uid, **value}),
                         timestamp_ms=timestamp_ms)

    purchase = {"kind": "purchase", "amount": 10_000, "currency": "CNY", "mcc": "5411",
                "country": "CN"}
    log = [
        stamped("account-events", {"event_id": "o", "ts": T0, "kind": "opened",
                                   "initial_limit": 500_000, "currency": "CNY"}, T0),
        stamped("transactions", {"event_id": "x", "ts": 4_070_908_800_000, **purchase},
                T0 + 2 * DAY),
        stamped("transactions", {"event_id": "b", "ts": T0 + 2 * DAY, **purchase},
                T0 + 2 * DAY),
        stamped("limit-commands", {"event_id": "f", "ts": T0 + 3 * DAY, "kind": "freeze",
                                   "operator": "ops-1", "reason": "fraud check"}, T0 + 3 * DAY),
    ]
    r = Replay(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()), Limits("CNY"),
               partitions=4)
    assert [orjson.loads(raw.value or b"")["event_id"] for raw in r.ordered(log)] == [
        "x", "o", "b", "f"]
    dead = [o.value["error"]["code"] for o in r.run(log) if o.topic == "dead-letter"]
    assert dead == ["ts_in_future"]
