"""Nothing stalls the stream, and health tells the truth (issue 16, the agent's side).

* A record that makes every set of records it is in fail (``poison_worker``) ends in
  ``dead-letter`` as ``processing_failed``, and the valid events after it — same partition
  and other partitions — are applied.
* A record on the internal re-key topic whose source header is not UTF-8 is dead-lettered as
  ``bad_rekey_source`` instead of failing its batch forever.
* A worker stuck on purpose (the broker "unreachable" for one record, every time) answers
  ``/healthz`` with 503 once it has made no progress for ``LIMITSTREAM_STALL_TIMEOUT_S``,
  and exits promptly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from limitstream.worker_process import WorkerProcess
from policies.processor import SOURCE_HEADER
from streams.app import aiokafka_kwargs, key_partition
from streams.kafka_io import LogRecord, logical_topics
from tests.e2e.helpers import (
    assert_views_exact,
    fold,
    metric,
    publish,
    read_topic,
    record,
    settings_of,
    wait_committed,
)
from tests.e2e.poison_worker import POISON, STUCK

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
H = 3_600_000
PARTITIONS = 4  # kafka_env's
#: A stuck worker must exit this soon after SIGTERM (it is SIGKILLed then).
STOP_BOUND_S = 20.0
StartWorker = Callable[..., WorkerProcess]


def users_on_two_partitions() -> tuple[str, str]:
    """Two users whose records sit on different partitions."""
    first = "p-user-0"
    other = next(f"p-user-{i}" for i in range(1, 100)
                 if key_partition(f"p-user-{i}".encode(), PARTITIONS)
                 != key_partition(first.encode(), PARTITIONS))
    return first, other


def opened(uid: str) -> LogRecord:
    return record("account-events", {
        "event_id": f"{uid}-open", "user_id": uid, "ts": T0, "kind": "opened",
        "initial_limit": 2_000_000, "currency": "CNY", "declared_income": 1_500_000})


def purchase(uid: str, i: int, merchant: str = "5411") -> LogRecord:
    return record("transactions", {
        "event_id": f"{uid}-tx{i}", "user_id": uid, "ts": T0 + (i + 1) * H,
        "kind": "purchase", "amount": 10_000 + i, "currency": "CNY",
        "merchant_category": merchant, "country": "CN"})


def dead_letters(env: dict[str, str]) -> list[dict[str, Any]]:
    return [r["value"] for r in read_topic(env, "dead-letter")]


def test_a_record_that_fails_every_time_is_dead_lettered_and_the_stream_goes_on(
        kafka_env: dict[str, str], start_worker: StartWorker) -> None:
    worker = start_worker(module="tests.e2e.poison_worker")
    a, b = users_on_two_partitions()
    accounts = [opened(a), opened(b)]
    before = [purchase(u, i) for i in range(5) for u in (a, b)]
    # The poison is a valid event of user a: nothing in it is bad but what it does to a batch.
    poison = LogRecord("transactions", a.encode(), orjson.dumps({
        "event_id": f"{a}-tx-poison", "user_id": a, "ts": T0 + 6 * H, "kind": "purchase",
        "amount": 999, "currency": "CNY", "merchant_category": POISON.decode(),
        "country": "CN"}))
    after = [purchase(u, i) for i in range(10, 15) for u in (a, b)]
    t0 = time.monotonic()
    produced = publish(kafka_env, accounts) + publish(kafka_env, [*before, poison, *after])
    wait_committed(kafka_env, produced, timeout=60)
    print(f"\npoison: all committed {time.monotonic() - t0:.1f} s after the publish")

    dead = dead_letters(kafka_env)
    assert len(dead) == 1, dead
    assert dead[0]["error"]["code"] == "processing_failed"
    assert base64.b64decode(dead[0]["raw_b64"]) == poison.value
    assert dead[0]["source_topic"].endswith("transactions")
    # Every valid event, before and after the poison, on both partitions: applied once.
    valid = [*accounts, *before, *after]
    assert_views_exact(worker, fold(kafka_env, valid), kafka_env)
    assert metric(worker, "limitstream_dead_letters_total", reason="processing_failed") == 1
    assert worker.get("/healthz")[0] == 200


def test_a_non_utf8_rekey_source_header_is_dead_lettered(
        kafka_env: dict[str, str], start_worker: StartWorker) -> None:
    worker = start_worker()
    a, b = users_on_two_partitions()
    produced = publish(kafka_env, [opened(a), opened(b)])
    wait_committed(kafka_env, produced, timeout=60)
    bad = orjson.dumps(orjson.loads(purchase(a, 0).value))
    settings = settings_of(kafka_env)
    names = logical_topics(settings)

    async def send_with_bad_header() -> None:
        producer = AIOKafkaProducer(**aiokafka_kwargs(settings))
        await producer.start()
        try:
            await producer.send_and_wait(names["rekeyed"], bad, key=a.encode(),
                                         headers=[(SOURCE_HEADER, b"\xff\xfetransactions")])
        finally:
            await producer.stop()

    asyncio.run(send_with_bad_header())
    later = [purchase(u, i) for i in range(1, 4) for u in (a, b)]
    produced = produced + publish(kafka_env, later)
    wait_committed(kafka_env, produced + Counter({"rekeyed": 1}), timeout=60)

    dead = dead_letters(kafka_env)
    assert [d["error"]["code"] for d in dead] == ["bad_rekey_source"]
    assert base64.b64decode(dead[0]["raw_b64"]) == bad
    assert_views_exact(worker, fold(kafka_env, [opened(a), opened(b), *later]), kafka_env)
    assert worker.get("/healthz")[0] == 200


def test_a_stuck_worker_reports_unhealthy(
        kafka_env: dict[str, str], start_worker: StartWorker) -> None:
    worker = start_worker({"LIMITSTREAM_STALL_TIMEOUT_S": "2"}, module="tests.e2e.poison_worker")
    uid = "stuck-user"
    publish(kafka_env, [opened(uid)])
    deadline = time.monotonic() + 30
    while worker.get("/users/" + uid)[0] != 200:
        assert time.monotonic() < deadline, "the user's account was never opened"
        time.sleep(0.2)
    assert worker.get("/healthz")[0] == 200
    publish(kafka_env, [purchase(uid, 0, merchant=STUCK.decode())])
    t0 = time.monotonic()
    while (answer := worker.get("/healthz"))[0] == 200:
        assert time.monotonic() - t0 < 30, "still healthy while stuck"
        time.sleep(0.2)
    status, body = answer
    print(f"\nstuck: /healthz 503 {time.monotonic() - t0:.1f} s after the stuck record")
    assert status == 503
    assert orjson.loads(body)["status"] == "stalled"
    assert worker.get("/readyz")[0] == 200  # it owns its partitions; it is just not alive
    # SIGTERM ends the retries: the stuck records stay unacked for the next owner.
    t1 = time.monotonic()
    worker.stop(timeout=STOP_BOUND_S)
    print(f"stuck: exited {time.monotonic() - t1:.1f} s after SIGTERM")
    assert worker.process.returncode != -signal.SIGKILL, (
        f"SIGTERM ignored for {STOP_BOUND_S} s{worker.log_tail()}")
