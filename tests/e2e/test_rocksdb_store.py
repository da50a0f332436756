"""The production store: a worker on RocksDB (rocksdict) applies the log like the pure core,
files every user in its own partition's database, and a worker restarted on the same
database carries on from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from lab.learning import InProcessLearning
from lab.replay import Replay
from limitstream.worker_process import WorkerProcess
from policies.engine_factory import engine_for
from policies.spec import load_policy
from streams.app import key_partition
from streams.codec import Limits
from streams.kafka_io import LogRecord, read_log
from streams.settings import Settings
from tests.e2e.helpers import publish_in_rounds, rounds, settings_of

pytestmark = pytest.mark.broker

SAMPLE = Path(__file__).resolve().parents[2] / "streams" / "samples" / "sample.jsonl"


def assert_views_are_the_cores(worker: WorkerProcess, settings: Settings,
                               log: list[LogRecord]) -> list[str]:
    """Every user of ``log`` as the worker serves it is the pure core's state; returns them."""
    engine, scorer = engine_for(load_policy(settings.policy_file), settings)
    replay = Replay(engine, Limits(settings.currency), InProcessLearning(scorer))
    list(replay.run(log))
    for uid, state in replay.states.items():
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, uid
        assert orjson.loads(body) == orjson.loads(orjson.dumps(state.view())), uid
    return list(replay.states)


def test_rocksdb_worker_matches_the_core(kafka_env: dict[str, str], tmp_path: Path,
                                         start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker({"LIMITSTREAM_STORE": "rocksdb://"})
    log = list(read_log(SAMPLE))
    publish_in_rounds(kafka_env, worker, log)

    settings = settings_of({**kafka_env, "LIMITSTREAM_STORE": "rocksdb://"})
    users = assert_views_are_the_cores(worker, settings, log)

    # A RocksDB database for every partition that holds one of the log's users.
    tables = list(Path(settings.data_dir).rglob("users-*.db"))
    partitions = {int(p.name.split("-")[-1].split(".")[0]) for p in tables}
    expected = {key_partition(uid.encode(), settings.partitions) for uid in users}
    assert expected <= partitions, (sorted(p.name for p in tables), expected)


def test_rocksdb_worker_restarts_on_its_database(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    env = {"LIMITSTREAM_STORE": "rocksdb://"}
    log = list(read_log(SAMPLE))
    parts = rounds(log)
    first = [rec for part in parts[: len(parts) // 2] for rec in part]
    rest = [rec for part in parts[len(parts) // 2:] for rec in part]
    assert first and rest

    worker = start_worker(env)
    publish_in_rounds(kafka_env, worker, first)
    worker.stop()  # SIGTERM: a clean stop, the database stays on disk
    worker = start_worker(env)
    publish_in_rounds(kafka_env, worker, rest)

    assert_views_are_the_cores(worker, settings_of({**kafka_env, **env}), log)
