"""Re-drive on the real (embedded) broker: refused -> cause fixed -> re-sent -> applied.

An operator's ``set_limit`` on a frozen account is refused (dead letter ``account_frozen``);
once the account is unfrozen, ``limitstream redrive --code account_frozen`` sends it back to
``limit-commands`` and the worker applies it: a refused event was never recorded as seen.
``--dry-run`` prints the same plan and sends nothing; a truncated dead letter is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from limitstream.worker_process import WorkerProcess
from streams.kafka_io import LogRecord
from tests.e2e.helpers import publish, read_topic, record, wait_committed

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
H = 3_600_000
UID = "rd-1"


def command(n: int, kind: str, **fields: Any) -> LogRecord:
    return record("limit-commands", {"event_id": f"{UID}-cmd{n}", "user_id": UID,
                                     "ts": T0 + n * H, "kind": kind, "operator": "ops-1",
                                     "reason": "test", **fields})


def redrive(env: dict[str, str], *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``limitstream redrive ARGS``: its printed plan and its summary."""
    done = subprocess.run([sys.executable, "-m", "limitstream", "redrive", "--timeout", "3",
                           *args], env={**os.environ, **env}, capture_output=True,
                          timeout=120, check=True)
    lines = [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return lines, orjson.loads(done.stderr.splitlines()[-1])


def limit(worker: WorkerProcess) -> int:
    status, body = worker.get(f"/users/{UID}")
    assert status == 200
    return int(orjson.loads(body)["limit"])


def test_a_refused_command_is_re_driven_once_fixed(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker()
    wait_committed(kafka_env, publish(kafka_env, [record("account-events", {
        "event_id": f"{UID}-open", "user_id": UID, "ts": T0, "kind": "opened",
        "initial_limit": 1_000_000, "currency": "CNY", "declared_income": 2_000_000})]))
    commands = [command(1, "freeze"),
                command(2, "set_limit", new_limit=1_500_000, currency="CNY"),
                command(3, "unfreeze")]
    oversized = LogRecord("transactions", UID.encode(), b'{"pad":"' + b"x" * 300_000 + b'"}')
    wait_committed(kafka_env, publish(kafka_env, [*commands, oversized]))
    dead = [r["value"] for r in read_topic(kafka_env, "dead-letter")]
    assert Counter(d["error"]["code"] for d in dead) == {"account_frozen": 1, "oversized": 1}
    before = limit(worker)
    assert before != 1_500_000

    plan, summary = redrive(kafka_env, "--dry-run")
    # Dead letters of two topics: their order depends on the partitions read first.
    assert sorted((p["code"], p.get("skipped", "send")) for p in plan) == [
        ("account_frozen", "send"), ("oversized", "truncated")]
    assert summary == {"read": 2, "selected": 2, "would_send": 1,
                       "skipped": {"truncated": 1}}
    time.sleep(2)
    assert len(read_topic(kafka_env, "limit-commands")) == len(commands), "dry run sent"

    plan, summary = redrive(kafka_env, "--code", "account_frozen", "--topic", "limit-commands")
    assert [p["code"] for p in plan] == ["account_frozen"]
    assert summary == {"read": 2, "selected": 1, "sent": 1, "skipped": {}}
    wait_committed(kafka_env, Counter({"limit-commands": len(commands) + 1}))
    assert limit(worker) == 1_500_000
    # Applied, not refused again: still two dead letters.
    assert len(read_topic(kafka_env, "dead-letter")) == 2
