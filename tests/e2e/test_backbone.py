"""The backbone on the real (embedded) broker: every input applied once or dead-lettered once.

A mixed log — valid events, upstream duplicates, a mis-keyed producer, bad input of every
kind and records that make processing raise — goes through a real worker process. Users'
states are compared with the pure core run over the same log.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from features import FeatureConfig
from lab.replay import Replay
from limitstream.worker_process import WorkerProcess
from policies.engine import Engine
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord
from streams.settings import DEFAULT_POLICY
from tests.e2e import faulty_worker
from tests.e2e.helpers import metric, publish, read_topic, record, wait_committed

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
H = 3_600_000
USERS = [f"u{i:03d}" for i in range(24)]


def opened(uid: str) -> dict[str, Any]:
    return {"event_id": f"{uid}-open", "user_id": uid, "ts": T0, "kind": "opened",
            "initial_limit": 2_000_000, "currency": "CNY", "declared_income": 1_500_000}


def purchase(uid: str, i: int, amount: int = 12_345) -> dict[str, Any]:
    return {"event_id": f"{uid}-tx{i}", "user_id": uid, "ts": T0 + (i + 1) * H,
            "kind": "purchase", "amount": amount + i, "currency": "CNY",
            "merchant_category": f"54{i % 7}1", "country": "CN" if i % 5 else "JP"}


def phases() -> list[tuple[list[LogRecord], Counter[str]]]:
    """The log in three phases (account events, transactions, repayments): inside a phase a
    user's records are on one topic, so the worker sees them in the log's order."""
    accounts = [record("account-events", opened(u)) for u in [*USERS, "poison-1", "mis-keyed"]]
    txs: list[LogRecord] = []
    for u in USERS:
        txs += [record("transactions", purchase(u, i)) for i in range(12)]
    # Upstream duplicates: the same event_id again, at later offsets.
    txs += [record("transactions", purchase(u, 3)) for u in USERS[:10]]
    # A producer that keys by something else: re-keyed, then applied once — also beside the
    # user's correctly keyed records, whose offsets (in another topic) are higher.
    txs += [record("transactions", purchase("mis-keyed", i)) for i in range(1, 4)]
    txs.append(record("transactions", purchase("mis-keyed", 0), key="account-42"))
    # Records that make processing raise (see faulty_worker): dead-lettered, stream goes on.
    txs += [record("transactions", purchase("poison-1", i)) for i in range(2)]
    bad = bad_records()
    txs += [r for r, _ in bad]
    repay: list[LogRecord] = []
    for u in USERS:
        repay.append(record("repayments", {
            "event_id": f"{u}-due", "user_id": u, "ts": T0 + 20 * H, "kind": "due",
            "installment_id": f"{u}-m1", "amount_due": 50_000, "due_ts": T0 + 500 * H,
            "currency": "CNY"}))
        repay.append(record("repayments", {
            "event_id": f"{u}-paid", "user_id": u, "ts": T0 + 30 * H, "kind": "paid",
            "installment_id": f"{u}-m1", "amount_paid": 50_000, "currency": "CNY"}))
    repay.append(record("limit-commands", {
        "event_id": "cmd-1", "user_id": USERS[0], "ts": T0 + 31 * H, "kind": "freeze",
        "operator": "mallory", "reason": "not an operator"}))
    out = []
    for recs in (accounts, txs, repay):
        out.append((recs, Counter(r.topic for r in recs)))
    return out


def bad_records() -> list[tuple[LogRecord, str]]:
    ok = purchase("u000", 99)

    def v(**changes: Any) -> dict[str, Any]:
        d = {**ok, **changes, "event_id": "bad-" + "-".join(f"{k}{len(str(x))}"
                                                             for k, x in sorted(changes.items()))}
        return {k: x for k, x in d.items() if x is not ...}

    raw_nan = orjson.dumps(v(amount=1)).replace(b'"amount":1', b'"amount":NaN')
    return [
        (record("transactions", None, key="u000", raw=b'{"event_id": "bad-json", '),
         "malformed_json"),
        (record("transactions", v(amount=...)), "missing_field"),
        (record("transactions", v(amount="12")), "wrong_type"),
        (record("transactions", v(amount=-500)), "out_of_range"),
        (record("transactions", v(amount=0, country="CN")), "out_of_range"),
        (record("transactions", None, key="u000", raw=raw_nan), "malformed_json"),
        (record("transactions", v(amount=10**15, merchant_category="x")), "out_of_range"),
        (record("transactions", v(kind="transfer")), "unknown_kind"),
        (record("transactions", v(currency="USD")), "wrong_currency"),
        (record("transactions", v(pad="x" * 20_000)), "oversized"),
    ]


@pytest.fixture
def faulty_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The pure core with the same injected fault as the worker under test."""
    monkeypatch.setattr(Engine, "step", faulty_worker._faulty_step)
    yield Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig())


def expected_views(engine: Engine, log: list[LogRecord]) -> dict[str, dict[str, Any]]:
    replay = Replay(engine, Limits("CNY"))
    list(replay.run(log))
    return {uid: orjson.loads(orjson.dumps(s.view())) for uid, s in replay.states.items()}


def test_every_input_applied_once_or_dead_lettered_once(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        faulty_engine: Engine) -> None:
    worker = start_worker(module="tests.e2e.faulty_worker")
    log: list[LogRecord] = []
    for recs, counts in phases():
        publish(kafka_env, recs)
        log += recs
        wait_committed(kafka_env, counts)

    # Dead letters: exactly one per bad record, with its reason, source and raw bytes.
    dead = [r["value"] for r in read_topic(kafka_env, "dead-letter")]
    by_raw = Counter(base64.b64decode(d["raw_b64"]) for d in dead)
    assert all(n == 1 for n in by_raw.values()), "a record was dead-lettered twice"
    for rec, code in bad_records():
        matches = [d for d in dead if base64.b64decode(d["raw_b64"]) == rec.value]
        assert len(matches) == 1, f"missing dead letter for {code}"
        assert matches[0]["error"]["code"] == code
        assert matches[0]["source_topic"].endswith("transactions")
        assert matches[0]["offset"] >= 0
    codes = Counter(d["error"]["code"] for d in dead)
    assert codes["processing_error"] == 2
    assert codes["unknown_operator"] == 1
    assert len(dead) == len(bad_records()) + 3
    assert len({(d["source_topic"], d["partition"], d["offset"]) for d in dead}) == len(dead)

    # Every valid event applied exactly once: states equal the pure fold of the log.
    expected = expected_views(faulty_engine, log)
    for uid in [*USERS, "mis-keyed", "poison-1"]:
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, uid
        assert orjson.loads(body) == expected[uid], uid
    assert orjson.loads(worker.get(f"/users/{USERS[3]}")[1])["events_applied"] == 12 + 1 + 2
    assert orjson.loads(worker.get("/users/mis-keyed")[1])["events_applied"] == 1 + 4
    assert worker.get("/users/nobody")[0] == 404

    assert metric(worker, "limitstream_duplicates_total", cause="event_id") == 10
    assert metric(worker, "limitstream_rekeyed_total") == 1
    assert metric(worker, "limitstream_dead_letters_total") == len(dead)
    assert metric(worker, "limitstream_agent_errors_total", stage="process") == 2
    assert worker.alive()
    log_text = worker.log_path.read_text() if worker.log_path else ""
    assert "crashed" not in log_text.lower(), "an agent crashed and was restarted"

    # A restart after a clean finish reprocesses nothing.
    worker.stop()
    again = start_worker(module="tests.e2e.faulty_worker")
    wait_committed(kafka_env, Counter({"transactions": 0}), timeout=5)
    import time

    time.sleep(3)
    assert metric(again, "limitstream_events_total") == 0
    assert metric(again, "limitstream_duplicates_total") == 0
    assert metric(again, "limitstream_dead_letters_total") == 0
    for uid in USERS[:3]:
        assert orjson.loads(again.get(f"/users/{uid}")[1]) == expected[uid]
