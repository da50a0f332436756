"""One trainer, many scorers, on the real broker: labels flow to the single trainer, signed
snapshots flow back, every worker serves the same version, a restarted trainer resumes, and a
tampered snapshot is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from limitstream.worker_process import WorkerProcess
from policies.snapshot import verify_snapshot
from streams.app import aiokafka_kwargs
from streams.kafka_io import LogRecord
from tests.e2e.helpers import metric, publish, read_topic, record, settings_of, wait_committed

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
DAY = 86_400_000
EVERY = 10  # snapshot every 10 labels


def installment_log(users: list[str], late: set[str], start: int) -> list[LogRecord]:
    """Per user: an account, an installment, and its outcome: paid on time, or a default
    (the policy's ``label_dpd``, 30 days past due, reached inside the label horizon)."""
    opened, due, outcome = [], [], []
    for u in users:
        opened.append(record("account-events", {
            "event_id": f"{u}-open", "user_id": u, "ts": start, "kind": "opened",
            "initial_limit": 1_000_000, "currency": "CNY"}))
        due.append(record("repayments", {
            "event_id": f"{u}-due", "user_id": u, "ts": start + DAY, "kind": "due",
            "installment_id": f"{u}-1", "amount_due": 30_000, "due_ts": start + 21 * DAY,
            "currency": "CNY"}))
        if u in late:
            outcome.append(record("repayments", {
                "event_id": f"{u}-od", "user_id": u, "ts": start + 51 * DAY, "kind": "overdue",
                "installment_id": f"{u}-1", "days_past_due": 30}))
        else:
            outcome.append(record("repayments", {
                "event_id": f"{u}-paid", "user_id": u, "ts": start + 10 * DAY, "kind": "paid",
                "installment_id": f"{u}-1", "amount_paid": 30_000, "currency": "CNY"}))
    return opened + due + outcome


def model_version(worker: WorkerProcess) -> str:
    for line in worker.get("/metrics")[1].decode().splitlines():
        if line.startswith("limitstream_model_info{") and line.endswith(" 1.0"):
            return line.split('version="')[1].split('"')[0]
    return ""


def snapshots(env: dict[str, str]) -> list[dict[str, Any]]:
    key = env["LIMITSTREAM_MODEL_HMAC_KEY"].encode()
    out = []
    for rec in read_topic(env, "model_snapshots"):
        raw = rec["value"]
        if raw is None:
            continue  # the tombstone of a replaced snapshot
        assert isinstance(raw, dict) and "value_b64" in raw, "snapshots are signed bytes"
        import base64

        snap = verify_snapshot(base64.b64decode(raw["value_b64"]), key=key)
        out.append({"version": snap.version, "n": snap.n_learned,
                    "offset": snap.labels_offset})
    return out


def wait_for(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def publish_phased(env: dict[str, str], log: list[LogRecord]) -> None:
    # Account events, then installments, then outcomes: each user's records in order.
    for topic_kind in ("opened", "due", "outcome"):
        part = [r for r in log if _phase(r) == topic_kind]
        counts = publish(env, part)
        wait_committed(env, counts)


def _phase(r: LogRecord) -> str:
    kind = orjson.loads(r.value)["kind"]
    return kind if kind in ("opened", "due") else "outcome"


def test_labels_train_one_model_served_everywhere_and_resumed(
        kafka_env: dict[str, str], start_worker: Callable[..., WorkerProcess]) -> None:
    extra = {"LIMITSTREAM_SNAPSHOT_EVERY_LABELS": str(EVERY)}
    w1 = start_worker(extra)
    w2 = start_worker(extra)
    users = [f"m{i:03d}" for i in range(40)]
    publish_phased(kafka_env, installment_log(users, set(users[::4]), T0))

    labels = read_topic(kafka_env, "labels")
    assert len(labels) == 40
    assert sorted(v["value"]["label"] for v in labels).count(1) == 10
    assert len({v["value"]["event_id"] for v in labels}) == 40

    wait_for(lambda: bool(snapshots(kafka_env)) and snapshots(kafka_env)[-1]["n"] == 40,
             what="a snapshot of all 40 labels")
    newest = snapshots(kafka_env)[-1]
    counts = [s["n"] for s in snapshots(kafka_env)]
    # A snapshot at every multiple of the cadence, as the replay's learning publishes them.
    assert counts == [10, 20, 30, 40]
    # Both workers serve the newest snapshot's version.
    wait_for(lambda: model_version(w1) == model_version(w2) == newest["version"],
             what="both workers serving the newest snapshot")
    assert metric(w1, "limitstream_model_snapshots_refused_total") == 0

    # The trainer's worker goes away and comes back: learning resumes, nothing twice.
    w1.stop()
    w2.stop()
    w3 = start_worker(extra)
    more = [f"n{i:03d}" for i in range(20)]
    publish_phased(kafka_env, installment_log(more, set(), T0 + 60 * DAY))
    wait_for(lambda: snapshots(kafka_env)[-1]["n"] == 60, what="resumed to 60 labels")
    after = [s["n"] for s in snapshots(kafka_env)][len(counts):]
    # Resumed from 40: the later snapshots count the earlier labels once, none twice.
    assert after == [50, 60]
    assert [s["offset"] for s in snapshots(kafka_env)][-1] == 59
    wait_for(lambda: model_version(w3) == snapshots(kafka_env)[-1]["version"],
             what="the restarted worker serving the newest snapshot")

    # A tampered snapshot is refused, counted, and changes nothing.
    served = model_version(w3)
    settings = settings_of(kafka_env)
    raw_snapshots = [r for r in read_topic(kafka_env, "model_snapshots")
                     if r["value"] is not None]  # not the tombstones of replaced snapshots
    import base64

    good = bytearray(base64.b64decode(raw_snapshots[-1]["value"]["value_b64"]))
    good[-5] ^= 0x01

    async def inject() -> None:
        p = AIOKafkaProducer(**aiokafka_kwargs(settings))
        await p.start()
        try:
            await p.send_and_wait(settings.topics.model_snapshots, bytes(good), key=b"model")
        finally:
            await p.stop()

    asyncio.run(inject())
    wait_for(lambda: metric(w3, "limitstream_model_snapshots_refused_total",
                            reason="bad_mac") == 1, what="the tampered snapshot refused")
    assert model_version(w3) == served
