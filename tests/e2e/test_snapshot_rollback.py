"""Model-snapshot rollback on the real (embedded) broker.

An older, genuinely signed snapshot re-published many times after the newest one — more
copies than any read-back window — never becomes the served model, neither in a running
worker nor after a restart; one re-published under a key naming a newer offset than its own
is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from limitstream.worker_process import WorkerProcess
from policies.model import RiskModel
from policies.snapshot import record_key, sign_snapshot
from streams.kafka_io import LogRecord
from tests.e2e.helpers import metric, publish

pytestmark = pytest.mark.broker

TS = 1_767_225_600_000
COPIES = 12  # the follower once read only the last 3 records at start-up


def snapshot(key: bytes, labels: int) -> tuple[str, bytes]:
    """A signed snapshot of a model that learnt ``labels`` labels (offsets 0..labels-1)."""
    m = RiskModel()
    for i in range(labels):
        m.learn({"utilization": (i % 10) / 10}, int(i % 10 >= 7))
    meta = {"version": m.version, "n_learned": m.n_learned, "labels_offset": labels - 1,
            "created_ts": TS + labels}
    return m.version, sign_snapshot(m.to_state(), key=key, meta=meta)


def served(worker: WorkerProcess) -> str:
    for line in worker.get("/metrics")[1].decode().splitlines():
        if line.startswith("limitstream_model_info{") and line.endswith(" 1.0"):
            return line.split('version="')[1].split('"')[0]
    return ""


def wait_served(worker: WorkerProcess, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and served(worker) != version:
        time.sleep(0.3)
    assert served(worker) == version


def test_an_old_snapshot_replayed_many_times_is_never_served(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    hmac_key = kafka_env["LIMITSTREAM_MODEL_HMAC_KEY"].encode()
    old_version, old = snapshot(hmac_key, 10)
    new_version, new = snapshot(hmac_key, 20)
    assert old_version != new_version
    topic = "model_snapshots"
    publish(kafka_env, [LogRecord(topic, record_key(9), old),
                        LogRecord(topic, record_key(19), new)])
    worker = start_worker()
    wait_served(worker, new_version)

    replays = [LogRecord(topic, record_key(9), old) for _ in range(COPIES)]
    replays.append(LogRecord(topic, b"model", old))  # the legacy key
    replays.append(LogRecord(topic, record_key(19), old))  # the newest's key: skipped
    replays.append(LogRecord(topic, record_key(25), old))  # a newer key than its offset
    publish(kafka_env, replays)
    time.sleep(3)  # the follower polls every 0.5 s
    assert served(worker) == new_version
    # Refused (policies/snapshot.py: key_mismatch), counted, logged.
    assert metric(worker, "limitstream_model_snapshots_refused_total") == 1

    worker.stop()
    again = start_worker()
    wait_served(again, new_version)
    time.sleep(2)
    assert served(again) == new_version
    assert metric(again, "limitstream_model_snapshots_refused_total") == 1
