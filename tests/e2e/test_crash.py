"""A worker SIGKILLed mid-stream and restarted loses nothing and applies nothing twice (issue 2).

One run (a module fixture) feeds a simulated 20 000-event log, in phases (see
``helpers.phased``), to one worker; the worker is SIGKILLed once it has processed about 40 %
of the log and restarted with the same identity (same group: it resumes at the committed
offsets, so everything after the last commit is delivered again). The tests then check the
run from three sides: the users' states, the outputs, the dead letters. The run is made once
with the memory store and once with the production store, RocksDB, whose restarted worker
carries on from its own database.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from limitstream.worker_process import WorkerProcess
from streams.broker import EmbeddedBroker, free_port
from streams.kafka_io import LogRecord
from tests.e2e.helpers import (
    Fold,
    assert_commits_safe,
    assert_outputs_exact,
    assert_views_exact,
    committed_total,
    dedup,
    fold,
    metric,
    publish,
    read_outputs,
    record,
    simulated_phases,
    user_of,
    wait_committed,
)
from tests.group_timings import GROUP_TIMINGS

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: 600 users over 35 days, cut to 6 phases: 20 057 events (958 account events, then 12 898
#: transactions — the phase the kill lands in — then repayments, transactions, ...).
USERS, DAYS = 600, 35
#: Kill once the worker has applied this share of the log.
KILL_AT = 0.4
#: One bad record every this many records of the big phase (about 45 in all).
BAD_EVERY = 300


def bad_record(i: int, uid: str) -> tuple[LogRecord, str]:
    """The i-th bad record (unique bytes), keyed by a real user, and its dead-letter code."""
    amount = 1_000 + i
    ok: dict[str, Any] = {"event_id": f"bad-{i}", "user_id": uid, "ts": 1_767_225_600_000 + i,
                          "kind": "purchase", "amount": amount, "currency": "CNY",
                          "merchant_category": "5411", "country": "CN"}
    variants: list[tuple[dict[str, Any] | bytes, str]] = [
        (b'{"event_id": "bad-%d", ' % i, "malformed_json"),
        ({k: v for k, v in ok.items() if k != "amount"}, "missing_field"),
        ({**ok, "amount": str(amount)}, "wrong_type"),
        ({**ok, "amount": -amount}, "out_of_range"),
        ({**ok, "kind": "transfer"}, "unknown_kind"),
        ({**ok, "currency": "USD"}, "wrong_currency"),
    ]
    value, code = variants[i % len(variants)]
    if isinstance(value, bytes):
        return record("transactions", None, key=uid, raw=value), code
    return record("transactions", value), code


@dataclass
class CrashRun:
    env: dict[str, str]
    worker: WorkerProcess  #: the restarted worker
    expected: Fold
    bad: list[tuple[LogRecord, str]]
    processed_at_kill: int  #: events applied by the first worker when it was killed
    committed_at_kill: int  #: the group's committed offsets then (all input topics)
    total: int
    replayed: float  #: records the restarted worker dropped as already applied
    seconds: float


@pytest.fixture(scope="module", params=["memory", "rocksdb"])
def crash(request: pytest.FixtureRequest, broker: EmbeddedBroker,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRun]:
    """The run, once per store: the memory store recovers every state from the changelog
    after the kill; the RocksDB store restarts on its database, which may hold states whose
    changelog records the kill cut off."""
    t0 = time.monotonic()
    store: str = request.param
    tmp = tmp_path_factory.mktemp(f"crash-{store}")
    env = {
        "LIMITSTREAM_BROKER": broker.url,
        "LIMITSTREAM_STORE": f"{store}://",
        "LIMITSTREAM_TOPIC_PREFIX": f"crash-{store}-",
        "LIMITSTREAM_APP_ID": f"limitstream-test-crash-{store}",
        "LIMITSTREAM_PARTITIONS": "4",
        "LIMITSTREAM_DATA_DIR": str(tmp / "data"),
        "LIMITSTREAM_OFFSET_TRACE": str(tmp / "offsets.jsonl"),
        "LIMITSTREAM_LOG_LEVEL": os.environ.get("LIMITSTREAM_TEST_LOG_LEVEL", "warning"),
        "LIMITSTREAM_MODEL_HMAC_KEY": "test-only-hmac-key",
        # Static membership: the restarted worker takes its partitions back sooner.
        "LIMITSTREAM_INSTANCE_ID": f"crash-worker-{store}",
        **GROUP_TIMINGS,
        # Faust's commit interval, not the tests' shorter one: the kill should leave many
        # records applied but not committed, whose outputs the restart sends again.
        "LIMITSTREAM_COMMIT_INTERVAL_MS": "2800",
    }
    phases = simulated_phases(USERS, DAYS)
    big = phases[1]
    bad: list[tuple[LogRecord, str]] = []
    mixed: list[LogRecord] = []
    for i, rec in enumerate(big):
        mixed.append(rec)
        if i % BAD_EVERY == BAD_EVERY // 2:
            bad.append(bad_record(len(bad), user_of(rec)))
            mixed.append(bad[-1][0])
    phases[1] = mixed
    log = [r for p in phases for r in p]
    total_valid = len(log) - len(bad)

    publish(env, [])  # creates the topics before the worker subscribes
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        workers.append(WorkerProcess.start(env, free_port(), tmp / f"worker-{len(workers)}.log"))
        return workers[-1]

    try:
        first = start()
        expected = fold(env, *phases)
        first.wait_ready()
        produced: Counter[str] = Counter()
        processed = committed = 0
        for n, recs in enumerate(phases):
            produced.update(publish(env, recs))
            if n == 1:
                # Mid-stream: SIGKILL once about KILL_AT of the log has been applied.
                while (processed := int(metric(first, "limitstream_events_total"))
                       ) < KILL_AT * total_valid:
                    assert first.alive()
                    time.sleep(0.05)
                first.kill()
                committed = sum(committed_total(env, t) for t in produced)
                start().wait_ready()
            wait_committed(env, produced, timeout=120)
        worker = workers[-1]
        replayed = metric(worker, "limitstream_duplicates_total", cause="offset")
        yield CrashRun(env, worker, expected, bad, processed, committed, len(log), replayed,
                       time.monotonic() - t0)
    finally:
        for w in workers:
            w.stop(timeout=15)


def test_crash_mid_stream_loses_nothing_and_states_equal_the_fold(crash: CrashRun) -> None:
    print(f"\ncrash: killed with {crash.processed_at_kill} of {crash.total} records applied, "
          f"{crash.committed_at_kill} committed; the restarted worker dropped "
          f"{crash.replayed:.0f} redelivered records as already applied; "
          f"run {crash.seconds:.1f} s")
    # The kill really was mid-stream, and it left records applied but not committed: the
    # restarted worker had them redelivered, and found them already in the states. (The
    # committed offsets read after the kill cannot show it: they count dead letters too, and
    # the worker applied and committed on between the count above and the kill.)
    assert 0.25 * crash.total < crash.processed_at_kill < 0.75 * crash.total
    assert crash.replayed > 0, "the restarted worker had nothing redelivered to drop"
    assert_views_exact(crash.worker, crash.expected, crash.env)
    assert_commits_safe(crash.env)
    assert metric(crash.worker, "limitstream_duplicates_total", cause="event_id") == 0


def test_crash_outputs_are_exactly_once_after_dedup(crash: CrashRun) -> None:
    duplicates = assert_outputs_exact(crash.env, crash.expected)
    print(f"\ncrash: duplicate output copies by topic {duplicates}")


def test_crash_dead_letters_of_bad_records_are_exactly_once(crash: CrashRun) -> None:
    dead = read_outputs(crash.env, ["dead-letter"])["dead-letter"]
    unique, extra = dedup(dead)
    print(f"\ncrash: {len(crash.bad)} bad records, {len(dead)} dead letters read, "
          f"{extra} duplicate copies")
    by_raw: dict[bytes, list[dict[str, Any]]] = {}
    for r in unique.values():
        by_raw.setdefault(base64.b64decode(r["value"]["raw_b64"]), []).append(r["value"])
    assert len(unique) == len(crash.bad)
    for rec, code in crash.bad:
        letters = by_raw.get(rec.value, [])
        assert len(letters) == 1, f"{code}: {len(letters)} dead letters for {rec.value[:60]!r}"
        d = letters[0]
        assert d["error"]["code"] == code
        assert d["source_topic"].endswith("transactions")
        assert d["key"] == (rec.key.decode() if rec.key else None)
