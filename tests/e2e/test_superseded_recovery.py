"""A table recovery that a newer rebalance overtakes changes nothing once it ends.

Faust abandons a recovery when another rebalance starts, but not the table's
``on_recovery_completed`` task, which goes on with the changelog tail it was reading (see
agents/users_table.py). Here the worker ``a`` (tests/e2e/stalled_tail_worker.py) has its tail
read held when ``b`` joins, ``c`` joins meanwhile, the rest of the log is processed in the
newest generation, and only then is the held read let go: the users ``a`` serves must still
be the fold's. (Without the guard the stale tail overwrote newer states and the memory
store's clean-up dropped users of partitions the old recovery did not cover.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from limitstream.worker_process import WorkerProcess
from tests.e2e.helpers import (
    assert_commits_safe,
    assert_views_exact,
    fold,
    publish_phase,
    simulated_phases,
    wait_assignment,
    wait_log,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 4


def test_a_superseded_recovery_changes_nothing(
        kafka_env: dict[str, str], tmp_path: Path,
        start_worker: Callable[..., WorkerProcess]) -> None:
    arm, release = tmp_path / "arm-tail", tmp_path / "release-tail"
    held = {"LIMITSTREAM_TEST_TAIL_ARM": str(arm), "LIMITSTREAM_TEST_TAIL_RELEASE": str(release)}
    phases = simulated_phases(200, 30)
    half = len(phases) // 2
    a = start_worker(held, module="tests.e2e.stalled_tail_worker")
    expected = fold(kafka_env, *phases)

    produced: Counter[str] = Counter()
    for recs in phases[:half]:  # a alone: its changelog now holds every user
        publish_phase(kafka_env, recs, produced)

    arm.touch()
    b = start_worker(wait=False)
    wait_log(a, "stalled tail read: waiting")  # a's recovery for the a+b generation is held
    c = start_worker(wait=False)
    wait_assignment([a, b, c], PARTITIONS, timeout=90)
    for recs in phases[half:]:  # processed in the a+b+c generation
        publish_phase(kafka_env, recs, produced)

    release.touch()
    wait_log(a, "stalled recovery callback returned")
    assert "superseded this recovery" in a.log_path.read_text()  # type: ignore[union-attr]
    for w in (a, b, c):
        assert_views_exact(w, expected, kafka_env)
    assert_commits_safe(kafka_env)
