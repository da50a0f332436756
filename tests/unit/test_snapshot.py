"""Signed snapshots: a round trip, and every way a snapshot read from the broker can be wrong
is refused before it is trusted."""

from __future__ import annotations

import hashlib
import hmac
import pathlib

import orjson
import pytest

from features.names import FEATURE_SET
from policies.model import RiskModel
from policies.snapshot import (
    MAGIC,
    MAX_SNAPSHOT_BYTES,
    Snapshot,
    SnapshotRejected,
    check_record_key,
    claimed_offset,
    record_key,
    sign_snapshot,
    verify_snapshot,
)

KEY = b"k" * 32
TS = 1_767_225_600_000


@pytest.fixture(scope="module")
def model() -> RiskModel:
    m = RiskModel()
    for i in range(50):
        m.learn({"utilization": (i % 10) / 10, "balance": 1000.0 * i}, int(i % 10 >= 7))
    return m


def meta_of(m: RiskModel, **extra: object) -> dict[str, object]:
    return {
        "version": m.version,
        "n_learned": m.n_learned,
        "labels_offset": 49,
        "created_ts": TS,
        "features": FEATURE_SET,
        **extra,
    }


def forge(payload: dict[str, object], key: bytes = KEY) -> bytes:
    """A snapshot signed with the right key around an arbitrary payload (a buggy trainer)."""
    body = orjson.dumps(payload)
    return MAGIC + hmac.new(key, MAGIC + body, hashlib.sha256).digest() + body


def reason(raw: bytes, key: bytes = KEY) -> str:
    with pytest.raises(SnapshotRejected) as exc:
        verify_snapshot(raw, key=key)
    return exc.value.reason


def test_round_trip(model: RiskModel) -> None:
    raw = sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model, quality={"n": 50}))
    snap = verify_snapshot(raw, key=KEY)
    assert isinstance(snap, Snapshot)
    got = (snap.version, snap.n_learned, snap.labels_offset, snap.created_ts)
    assert got == (model.version, 50, 49, TS)
    assert snap.meta["quality"] == {"n": 50}
    loaded = RiskModel.from_state(snap.model_state)
    assert loaded.version == model.version
    x = {"utilization": 0.8, "balance": 30_000.0}
    assert loaded.score(x) == model.score(x)


def test_every_single_byte_flip_is_refused(model: RiskModel) -> None:
    raw = sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model))
    step = max(1, len(raw) // 300)  # magic, MAC and payload bytes alike
    for i in [*range(0, len(MAGIC) + 40), *range(len(MAGIC) + 40, len(raw), step)]:
        bad = bytearray(raw)
        bad[i] ^= 0x01
        assert reason(bytes(bad)) in {"bad_format", "bad_mac"}, i


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"", "no_key"),
        (b"short", "no_key"),
        (b"K" * 32, "bad_mac"),
        (KEY + b"x", "bad_mac"),
    ],
)
def test_wrong_or_missing_key_is_refused(model: RiskModel, key: bytes, expected: str) -> None:
    raw = sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model))
    assert reason(raw, key=key) == expected


def test_signing_refuses_weak_keys_and_inconsistent_meta(model: RiskModel) -> None:
    state = model.to_state()
    with pytest.raises(ValueError, match="key"):
        sign_snapshot(state, key=b"", meta=meta_of(model))
    with pytest.raises(ValueError, match="version"):
        sign_snapshot(state, key=KEY, meta={**meta_of(model), "version": "logistic-50-0123"})
    with pytest.raises(ValueError, match="lacks"):
        sign_snapshot(state, key=KEY, meta={"version": model.version})
    with pytest.raises(ValueError, match="integer"):
        sign_snapshot(state, key=KEY, meta={**meta_of(model), "labels_offset": "49"})


def test_truncated_and_foreign_inputs_are_refused(model: RiskModel) -> None:
    raw = sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model))
    for cut in (0, 5, len(MAGIC), len(MAGIC) + 31, len(MAGIC) + 32, len(raw) // 2, len(raw) - 1):
        assert reason(raw[:cut]) in {"bad_format", "bad_mac"}, cut
    assert reason(raw + b" ") == "bad_mac"
    assert reason(b'{"meta": {}, "model": {}}') == "bad_format"
    assert reason(b"\x80\x04\x95" + b"\x00" * 64) == "bad_format"  # a pickle is never loaded


def test_oversize_is_refused_before_any_work(model: RiskModel) -> None:
    raw = sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model))
    assert reason(raw + b" " * MAX_SNAPSHOT_BYTES) == "oversize"
    huge = {**meta_of(model), "padding": "x" * MAX_SNAPSHOT_BYTES}
    with pytest.raises(ValueError, match="exceeds"):
        sign_snapshot(model.to_state(), key=KEY, meta=huge)


def test_a_snapshot_learnt_on_another_feature_set_is_refused(model: RiskModel) -> None:
    # Signed snapshots name the feature set of the code that signed them...
    raw = sign_snapshot(model.to_state(), key=KEY, meta={**meta_of(model), "features": "x"})
    assert verify_snapshot(raw, key=KEY).meta["features"] == FEATURE_SET
    # ...and one from before the feature set changed (no name, or another one) is refused:
    # its weights do not describe this code's vectors.
    state = model.to_state()
    old = {k: v for k, v in meta_of(model).items() if k != "features"}
    for meta in (old, {**old, "features": "0123456789ab"}):
        with pytest.raises(SnapshotRejected) as e:
            verify_snapshot(forge({"meta": meta, "model": state}), key=KEY)
        assert e.value.reason == "bad_state" and "feature set" in e.value.detail


def test_authenticated_but_inconsistent_payloads_are_refused(model: RiskModel) -> None:
    state = model.to_state()
    good = meta_of(model)
    liar = {**good, "version": "logistic-50-abcdefabcdef"}
    assert reason(forge({"meta": liar, "model": state})) == "version_mismatch"
    assert reason(forge({"meta": {**good, "n_learned": 49}, "model": state})) == "version_mismatch"
    tampered = orjson.loads(orjson.dumps(state))
    tampered["intercept"] += 1.0  # the trainer's meta no longer describes this state
    assert reason(forge({"meta": good, "model": tampered})) == "version_mismatch"
    broken = {**state, "kind": "deep_net"}
    assert reason(forge({"meta": good, "model": broken})) == "bad_state"
    assert reason(forge({"meta": {**good, "created_ts": -1}, "model": state})) == "bad_payload"
    assert reason(forge({"meta": good})) == "bad_payload"
    assert reason(forge([1, 2])) == "bad_payload"  # type: ignore[arg-type]
    body = b"{not json"
    raw = MAGIC + hmac.new(KEY, MAGIC + body, hashlib.sha256).digest() + body
    assert reason(raw) == "bad_payload"


def test_no_pickle_in_the_model_code() -> None:
    root = pathlib.Path(__file__).resolve().parents[2] / "policies"
    for name in ("model.py", "snapshot.py", "quality.py", "scorer.py"):
        text = (root / name).read_text()
        assert "import pickle" not in text and "pickle.loads" not in text, name


def test_a_snapshot_is_accepted_only_under_its_own_key(model: RiskModel) -> None:
    """Keys name the labels offset, so a re-published old snapshot cannot take the newest's
    key (compaction would then drop the newest): under another key it is refused."""
    snap = verify_snapshot(sign_snapshot(model.to_state(), key=KEY, meta=meta_of(model)), key=KEY)
    check_record_key(record_key(49), snap)
    check_record_key(b"model", snap)  # published before keys named offsets
    for wrong in (record_key(50), record_key(48), b"model@049", None, b""):
        with pytest.raises(SnapshotRejected) as exc:
            check_record_key(wrong, snap)
        assert exc.value.reason == "key_mismatch"


@pytest.mark.parametrize(("key", "offset"), [
    (b"model@0", 0), (b"model@123456", 123456), (b"model", None), (None, None),
    (b"model@", None), (b"model@-1", None), (b"model@12x", None), (b"model@" + b"9" * 40, None),
])
def test_the_offset_a_key_claims(key: bytes | None, offset: int | None) -> None:
    assert claimed_offset(key) == offset
