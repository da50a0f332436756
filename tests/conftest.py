"""Shared fixtures: the embedded broker (one per session) and isolated worker environments."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from limitstream.worker_process import WorkerProcess
from streams.broker import EmbeddedBroker, free_port
from tests.group_timings import GROUP_TIMINGS

_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker on a free loopback port, stopped by its PID at the end."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = EmbeddedBroker.start(log=log)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def kafka_env(broker: EmbeddedBroker, tmp_path: Path) -> dict[str, str]:
    """LIMITSTREAM_* for one test: its own topics and consumer group on the shared broker."""
    n = next(_ids)
    return {
        "LIMITSTREAM_BROKER": broker.url,
        "LIMITSTREAM_TOPIC_PREFIX": f"t{n}-",
        "LIMITSTREAM_APP_ID": f"limitstream-test-{n}",
        "LIMITSTREAM_PARTITIONS": "4",
        "LIMITSTREAM_DATA_DIR": str(tmp_path / "data"),
        # Every worker's processed, sought and committed input offsets, for the failure
        # messages of the end-to-end tests (tests/e2e/helpers.offset_report).
        "LIMITSTREAM_OFFSET_TRACE": str(tmp_path / "offsets.jsonl"),
        # LIMITSTREAM_TEST_LOG_LEVEL=info gives the workers' logs (tmp_path) Faust's timeline.
        "LIMITSTREAM_LOG_LEVEL": os.environ.get("LIMITSTREAM_TEST_LOG_LEVEL", "warning"),
        "LIMITSTREAM_MODEL_HMAC_KEY": "test-only-hmac-key",
        **GROUP_TIMINGS,
    }


@pytest.fixture
def start_worker(kafka_env: dict[str, str], tmp_path: Path
                 ) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a worker process (own web port, own log file); all stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(extra: dict[str, str] | None = None, wait: bool = True,
              module: str = "limitstream") -> WorkerProcess:
        i = len(started)
        w = WorkerProcess.start({**kafka_env, **(extra or {})}, free_port(),
                                tmp_path / f"worker-{i}.log", module=module)
        started.append(w)
        if wait:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop(timeout=15)
