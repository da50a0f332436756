"""Live decisions equal the replay's whatever the backlog: event-time order (issue 15).

A simulated portfolio whose users' events are spread over all four input topics (operator
commands added) is published in one bulk produce, each topic written whole, one after
another — account events last, the worst order for a worker that applies records as they
are fetched. Then a worker starts with that lag; the outputs it sends, deduplicated by
event_id, must equal ``limitstream replay``'s byte for byte (the fold of the log, see
``helpers.fold``), and every user's state too. The same after the worker is SIGKILLed
mid-stream and restarted, and when a second worker joins mid-stream.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from lab.simulate import SimConfig, simulate
from limitstream.worker_process import WorkerProcess
from streams.kafka_io import LogRecord
from tests.e2e.helpers import (
    assert_commits_safe,
    assert_outputs_exact,
    assert_views_exact,
    fold,
    metric,
    publish,
    record,
    wait_assignment,
    wait_committed,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: About 8 000 events: few enough labels that the model stays cold (helpers.fold checks).
USERS, DAYS = 250, 40
#: The bulk produce's topic order: account events (the users' openings) last.
PUBLISH_ORDER = ("limit-commands", "transactions", "repayments", "account-events")
DAY = 86_400_000
#: Disturb the group once the (first) worker has applied this share of the log.
DISTURB_AT = 0.35
#: The workers' idle bound. A record released past the bound may be applied out of event
#: order, and then live and replay may rightly differ: the bound is the guarantee's one
#: exception. The default (10 s) is for production; a loaded 2-core test machine has starved
#: a worker's take of a fetched partition for longer (241 records released early, 33 users
#: decided differently), so the workers here wait for records already on the broker as long
#: as it takes, as Kafka Streams does for a partition with known lag.
ORDER_WAIT = {"LIMITSTREAM_MAX_IDLE_MS": "600000"}

StartWorker = Callable[..., WorkerProcess]


def command(uid: str, ts: int, kind: str, n: int, **extra: Any) -> LogRecord:
    return record("limit-commands", {
        "event_id": f"{uid}-cmd{n}", "user_id": uid, "ts": ts, "kind": kind,
        "operator": "ops-1", "reason": "e2e: event-time order", **extra})


@functools.cache
def story_log() -> tuple[LogRecord, ...]:
    """The simulated log, with a freeze and an unfreeze for every fifth user, and a limit
    set for every seventh, a few days after their account opened."""
    log: list[LogRecord] = []
    opened: dict[str, int] = {}
    for line in simulate(SimConfig(users=USERS, days=DAYS, seed=15)):
        log.append(record(line.topic, line.value))
        if line.value["kind"] == "opened":
            opened[line.key] = line.value["ts"]
    for i, (uid, ts) in enumerate(sorted(opened.items())):
        if i % 5 == 0:
            log.append(command(uid, ts + 3 * DAY + 1, "freeze", 1))
            log.append(command(uid, ts + 9 * DAY + 1, "unfreeze", 2))
        if i % 7 == 0:
            log.append(command(uid, ts + 5 * DAY + 7, "set_limit", 3, new_limit=300_000))
    return tuple(log)


def bulk(log: tuple[LogRecord, ...]) -> list[LogRecord]:
    """Each topic whole, one after another, in PUBLISH_ORDER."""
    assert {r.topic for r in log} == set(PUBLISH_ORDER), "every topic carries the stories"
    return [r for topic in PUBLISH_ORDER for r in log if r.topic == topic]


def wait_applied(worker: WorkerProcess, n: float, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(worker, "limitstream_events_total") < n:
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, f"fewer than {n:.0f} events applied"
        time.sleep(0.05)


@pytest.mark.parametrize("disturbance", ["none", "sigkill", "second_worker"])
def test_live_outputs_equal_the_replay_after_a_bulk_produce(
        disturbance: str, kafka_env: dict[str, str], start_worker: StartWorker) -> None:
    log = story_log()
    records = bulk(log)
    expected = fold(kafka_env, records)  # `limitstream replay` of the published log
    # Static membership: a restarted worker takes its partitions back without waiting for
    # its dead predecessor's session to expire.
    first = {"LIMITSTREAM_INSTANCE_ID": "order-worker-1", **ORDER_WAIT}
    produced = publish(kafka_env, records)
    worker = start_worker(first)
    workers = [worker]
    if disturbance == "sigkill":
        wait_applied(worker, DISTURB_AT * len(records))
        worker.kill()
        worker = start_worker(first)
        workers = [worker]
    elif disturbance == "second_worker":
        wait_applied(worker, DISTURB_AT * len(records))
        workers.append(start_worker({"LIMITSTREAM_INSTANCE_ID": "order-worker-2", **ORDER_WAIT},
                                    wait=False))
        wait_assignment(workers, int(kafka_env["LIMITSTREAM_PARTITIONS"]), timeout=90)
    wait_committed(kafka_env, Counter(produced), timeout=120)

    forced = sum(metric(w, "limitstream_order_forced_total") for w in workers)
    late = sum(metric(w, "limitstream_out_of_order_events_total") for w in workers)
    print(f"\n{disturbance}: {len(records)} records; released early {forced:.0f}, "
          f"applied out of order {late:.0f}")
    assert forced == 0, f"{forced:.0f} records released past the idle bound"
    assert_views_exact(worker, expected, kafka_env)
    assert_outputs_exact(kafka_env, expected)
    assert_commits_safe(kafka_env)
