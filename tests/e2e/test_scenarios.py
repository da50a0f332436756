"""The policy's stories on the real broker: the worker emits the same limit and status events,
and the same audit trail, as the offline replay of the same log (issue 4; also the replay
parity of the feature vectors, issue 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from lab.learning import InProcessLearning
from lab.replay import Replay
from limitstream.worker_process import WorkerProcess
from policies.engine_factory import engine_for
from policies.spec import load_policy
from streams.codec import Limits
from tests.e2e.helpers import publish_in_rounds, read_topic, rounds, settings_of
from tests.stories import STORIES, all_stories_log

pytestmark = pytest.mark.broker


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        v = r["value"]
        # A redelivered output keeps its id and must be the same message.
        assert out.setdefault(v["event_id"], v) == v
    return out


def test_stories_on_the_broker_equal_the_replay(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    log = all_stories_log()
    worker = start_worker()
    n_rounds = publish_in_rounds(kafka_env, worker, log)
    assert n_rounds > 1

    # The replay as `limitstream replay` runs it: the worker's engine, learning in process;
    # round by round, as the worker saw the log (it cannot apply a record before the rounds
    # published before it).
    settings = settings_of(kafka_env)
    engine, scorer = engine_for(load_policy(settings.policy_file), settings)
    replay = Replay(engine, Limits(settings.currency), InProcessLearning(scorer),
                    settings.partitions)
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    for out in (out for part in rounds(log) for out in replay.run(part)):
        value = orjson.loads(orjson.dumps(out.value))
        expected.setdefault(out.topic, {})[value["event_id"]] = value

    for topic in ("limit-changes", "account-status", "decisions"):
        live = by_id(read_topic(kafka_env, topic))
        assert live.keys() == expected[topic].keys(), topic
        for eid, value in expected[topic].items():
            diff = {k: (live[eid].get(k), v) for k, v in value.items() if live[eid].get(k) != v}
            assert not diff, (topic, eid, diff)
    actions = {v["action"] for v in expected["decisions"].values()}
    assert {"RAISE", "CUT", "SUSPEND", "REINSTATE", "PROMOTE", "RESTORE", "RELAPSE",
            "FREEZE", "UNFREEZE"} <= actions

    # The features the worker holds are those of the pure computation, user by user.
    for build in STORIES.values():
        user = build().user
        status, body = worker.get(f"/users/{user}")
        assert status == 200
        assert orjson.loads(body) == orjson.loads(orjson.dumps(replay.states[user].view()))
