"""A table recovery that a newer rebalance overtakes while Faust still reads the changelog
completes nothing: the newer generation's recovery restores every user.

Faust swallows the ``RebalanceAgain`` that ends such a read and runs the overtaken recovery's
completion, whose table callbacks then ran beside the newer recovery with its partitions
(agents/faust_fixes.no_completion_of_an_overtaken_recovery). Here the worker ``h``
(tests/e2e/held_recovery_worker.py) holds its first recovery's read midway; ``a`` stops, so
the newer generation gives ``h`` every partition, the two it was recovering included; the
read goes on once the newer recovery has begun. Without the correction ``h`` serves states
older than inputs the group has committed, with no unsafe commit, gap or hole in the offset
trace: issue 20's lost updates, reproduced on the chaos soak's harsh schedule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

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


def test_an_overtaken_recovery_completes_nothing(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    phases = simulated_phases(200, 30)
    half = len(phases) // 2
    a = start_worker()
    expected = fold(kafka_env, *phases)
    produced: Counter[str] = Counter()
    # a alone: every user's state is in the changelog, most of them well before its end (the
    # last phase of this half touches a few users), where a recovery's last batch cannot
    # cover them.
    for recs in phases[:half]:
        publish_phase(kafka_env, recs, produced)

    h = start_worker(wait=False, module="tests.e2e.held_recovery_worker")
    wait_log(h, "recovery read held")  # h's recovery of its share, held after a few records
    a.stop()  # the newer generation: h alone, with the partitions it was recovering
    wait_log(h, "recovery read released")
    wait_assignment([h], PARTITIONS, timeout=90)
    for recs in phases[half:]:  # applied by h on the states it recovered
        publish_phase(kafka_env, recs, produced)

    assert_views_exact(h, expected, kafka_env)
    assert_commits_safe(kafka_env)
