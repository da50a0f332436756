"""Several workers on one host share the partitions and survive each other (issue 8).

Each test starts two workers (own web ports), checks that they split the partitions, feeds a
simulated 20 000-event log in phases (see ``helpers.phased``; the big phase is published at
a steady rate so the stream is live while workers come and go), disturbs the group mid-stream
and, once every input is committed, checks the same criteria:

* every user's ``GET /users/{id}``, asked of every live worker (Faust routes it to the
  owner), equals the pure fold of the log and counts each of the user's events once;
* the outputs deduplicated by event_id are the fold's, id for id and value for value, every
  copy of an id is the same message, and per-user versions strictly increase.

Takeover and hand-over times are figures, printed (``-s``): the tests wait for them with
generous timeouts and assert no duration (a loaded CI machine is not a slow worker).
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable

import pytest

from limitstream.worker_process import WorkerProcess
from streams.kafka_io import LogRecord
from tests.e2e.helpers import (
    Feed,
    Fold,
    assert_commits_safe,
    assert_outputs_exact,
    assert_views_exact,
    fold,
    simulated_phases,
    wait_assignment,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: The kafka_env default; 4 partitions split 2/2 (or 2/1/1 with a third worker).
PARTITIONS = 4
#: 600 users over 35 days in 6 phases: 20 057 events; phase 1 holds 12 898 transactions.
USERS, DAYS = 600, 35
#: Records/s of the big phase: about 9 s of live stream.
RATE = 1500.0

StartWorker = Callable[..., WorkerProcess]


@functools.cache
def phases() -> list[list[LogRecord]]:
    return simulated_phases(USERS, DAYS)


def start_pair(start_worker: StartWorker, env: dict[str, str]
               ) -> tuple[list[WorkerProcess], Fold]:
    """Two workers started together; the fold is computed while they join. Both must be
    ready and own partitions.

    Dynamic group membership (no LIMITSTREAM_INSTANCE_ID): on the embedded broker two static
    members have been seen to rebalance forever ("local member_id was not recognized" every
    ~7 s), and a static member sends no LeaveGroup on SIGTERM, so its partitions would wait
    out the session timeout.
    """
    t0 = time.monotonic()
    workers = [start_worker(wait=False) for _ in range(2)]
    expected = fold(env, *phases())
    wait_assignment(workers, PARTITIONS, timeout=90)
    print(f"\ntwo workers started and split the partitions in {time.monotonic() - t0:.1f} s")
    return workers, expected


def mid_stream(feed: Feed, after: float = 3.0) -> None:
    """Return ``after`` seconds into the big phase."""
    assert feed.started[1].wait(120), "the first phase was never committed"
    time.sleep(after)
    assert feed.is_alive(), "the stream ended before the disturbance"


def check(name: str, env: dict[str, str], expected: Fold, live: list[WorkerProcess],
          t0: float) -> None:
    for w in live:
        assert_views_exact(w, expected, env)
    assert_commits_safe(env)
    duplicates = assert_outputs_exact(env, expected)
    print(f"{name}: {sum(expected.applied.values())} events exact on {len(live)} worker(s); "
          f"duplicate output copies {duplicates}; test {time.monotonic() - t0:.0f} s")


def test_sigkill_one_of_two_mid_stream(kafka_env: dict[str, str],
                                       start_worker: StartWorker) -> None:
    t0 = time.monotonic()
    (victim, survivor), expected = start_pair(start_worker, kafka_env)
    feed = Feed(kafka_env, phases(), rates={1: RATE})
    feed.start()
    mid_stream(feed)
    victim.kill()
    killed = time.monotonic()
    wait_assignment([survivor], PARTITIONS, timeout=30)
    print(f"SIGKILL: the survivor owns all {PARTITIONS} partitions "
          f"{time.monotonic() - killed:.1f} s after the kill")
    feed.finish()
    check("SIGKILL one of two", kafka_env, expected, [survivor], t0)


def test_sigterm_and_restart_hands_over(kafka_env: dict[str, str],
                                        start_worker: StartWorker) -> None:
    t0 = time.monotonic()
    (leaving, staying), expected = start_pair(start_worker, kafka_env)
    feed = Feed(kafka_env, phases(), rates={1: RATE})
    feed.start()
    mid_stream(feed)
    stopped = time.monotonic()
    leaving.stop()
    wait_assignment([staying], PARTITIONS, timeout=30)
    handover = time.monotonic() - stopped
    # It stopped on the SIGTERM, not on the SIGKILL that follows a stop that lingers. How fast
    # the hand-over was is a figure (printed), not an assertion: on a loaded machine it took
    # 10.5 s, on a quiet one about 7 s.
    assert leaving.process.returncode != -signal.SIGKILL, "the worker ignored SIGTERM"
    back = start_worker(wait=False)
    restarted = time.monotonic()
    wait_assignment([staying, back], PARTITIONS, timeout=60)
    print(f"SIGTERM: hand-over to the other worker in {handover:.1f} s (stop included); "
          f"the restarted worker owned partitions again {time.monotonic() - restarted:.1f} s "
          f"after its start")
    feed.finish()
    check("SIGTERM and restart", kafka_env, expected, [staying, back], t0)


@pytest.mark.parametrize("standby", [0, 1], ids=["no-standby", "standby-replica"])
def test_repeated_sigkills(kafka_env: dict[str, str], start_worker: StartWorker,
                           standby: int) -> None:
    # With a standby replica (what deploy/ runs) Faust keeps reading the other workers'
    # changelog partitions while the agent runs: the case where late changelog records once
    # overwrote newer states (agents/users_table.py).
    kafka_env["LIMITSTREAM_STANDBY_REPLICAS"] = str(standby)
    t0 = time.monotonic()
    workers, expected = start_pair(start_worker, kafka_env)
    # A slower big phase: the stream stays live through the five kills (about 35 s).
    feed = Feed(kafka_env, phases(), rates={1: 350.0}, timeout=240)
    feed.start()
    mid_stream(feed, after=2.0)
    for n, pause in enumerate((5, 7, 9, 6, 8)):
        i = n % 2
        workers[i].kill()
        workers[i] = start_worker(wait=False)
        time.sleep(pause)
    settle = time.monotonic()
    wait_assignment(workers, PARTITIONS, timeout=90)
    print(f"5 SIGKILLs: both workers own partitions again {time.monotonic() - settle:.1f} s "
          f"after the last pause")
    feed.finish(timeout=300)
    check("repeated SIGKILLs", kafka_env, expected, workers, t0)


def test_third_worker_joins_mid_stream(kafka_env: dict[str, str],
                                       start_worker: StartWorker) -> None:
    t0 = time.monotonic()
    workers, expected = start_pair(start_worker, kafka_env)
    feed = Feed(kafka_env, phases(), rates={1: RATE})
    feed.start()
    mid_stream(feed)
    joined = time.monotonic()
    workers.append(start_worker(wait=False))
    wait_assignment(workers, PARTITIONS, timeout=60)
    print(f"join: three workers split the partitions {time.monotonic() - joined:.1f} s after "
          f"the third started")
    feed.finish()
    check("third worker joins", kafka_env, expected, workers, t0)
