"""Records that once stopped the worker for good, on the real (embedded) broker.

An 800 KB value (valid on the wire: under Kafka's 1 MB) and a 600 KB key with a 7-byte value
each made a dead letter larger than the producer's request limit, and the agent retried that
batch forever. A purchase dated 2099 moved its user's clock past every later real event. Each
now ends in ``dead-letter`` (bounded), and the valid events after them, on the same partition
and on others, are applied as if they had never come.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from limitstream.worker_process import WorkerProcess
from streams.codec import encode
from streams.kafka_io import LogRecord
from tests.e2e.helpers import publish, read_topic, record, settings_of, wait_committed

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
H = 3_600_000
USERS = [f"big{i}" for i in range(6)]
AMOUNT = 10_000


def opened(uid: str) -> dict[str, Any]:
    return {"event_id": f"{uid}-open", "user_id": uid, "ts": T0, "kind": "opened",
            "initial_limit": 2_000_000, "currency": "CNY", "declared_income": 1_500_000}


def purchase(uid: str, i: int, ts: int = 0) -> dict[str, Any]:
    return {"event_id": f"{uid}-tx{i}", "user_id": uid, "ts": ts or T0 + (i + 1) * H,
            "kind": "purchase", "amount": AMOUNT, "currency": "CNY",
            "merchant_category": "5411", "country": "CN"}


def test_oversized_records_keys_and_future_events_end_in_dead_letter(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker()
    accounts = [record("account-events", opened(u)) for u in USERS]
    wait_committed(kafka_env, publish(kafka_env, accounts))

    victim = USERS[0]
    big_value = orjson.dumps({**purchase(victim, 100), "pad": "x" * 800_000})
    poison = [
        LogRecord("transactions", victim.encode(), big_value),
        LogRecord("transactions", b"k" * 600_000, b'{"a":1}'),
        record("transactions", purchase(victim, 101, ts=4_070_908_800_000)),  # 2099-01-01
    ]
    valid = [record("transactions", purchase(u, i)) for i in range(5) for u in USERS]
    counts = publish(kafka_env, [*poison, *valid])
    wait_committed(kafka_env, counts)

    dead = [r for r in read_topic(kafka_env, "dead-letter")]
    codes = Counter(d["value"]["error"]["code"] for d in dead)
    assert codes == {"oversized": 1, "oversized_key": 1, "ts_in_future": 1}, codes
    bound = settings_of(kafka_env).dead_letter_max_bytes
    for d in dead:
        value = d["value"]
        assert len(encode(value)) + len((d["key"] or "").encode()) <= bound
        truncated = value["error"]["code"] != "ts_in_future"
        assert value["truncated"] is truncated
    by_code = {d["value"]["error"]["code"]: d["value"] for d in dead}
    assert by_code["oversized"]["raw_size"] == len(big_value)
    assert big_value.startswith(base64.b64decode(by_code["oversized"]["raw_b64"]))
    assert by_code["oversized_key"]["key_size"] == 600_000
    assert by_code["ts_in_future"]["error"]["value"] == 4_070_908_800_000

    # Every valid event after them applied, the victim's clock unmoved by 2099.
    for uid in USERS:
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, uid
        view = orjson.loads(body)
        assert view["events_applied"] == 1 + 5, (uid, view["events_applied"])
        assert view["balance"] == 5 * AMOUNT
        assert view["last_event_ts"] == T0 + 5 * H
    assert worker.alive()
