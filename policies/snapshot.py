"""Signed model snapshots: how one trainer's model reaches every worker through a Kafka topic.

Nothing read from the broker is trusted unauthenticated, and nothing is ever unpickled: a
snapshot is plain JSON (the model's :meth:`~policies.model.RiskModel.to_state` and some
metadata), authenticated with HMAC-SHA256. The wire format is::

    MAGIC (b"limitstream-snapshot/1\\n") | MAC (32 bytes) | payload (orjson)

with ``MAC = HMAC-SHA256(key, MAGIC + payload)``. :func:`verify_snapshot` checks, in order and
before parsing anything: a key is configured, the size is bounded, the magic names this format,
the MAC matches (``hmac.compare_digest``); only then is the payload parsed, and the model state
rebuilt and checked against the version the metadata claims.

On the (compacted) snapshots topic each snapshot is keyed by its labels offset
(:func:`record_key`). A re-published old snapshot then only ever replaces copies of itself:
compaction cannot let it evict the newest one, whose key differs. A record whose key names
another offset than its authenticated payload is refused (:func:`check_record_key`).

Examples
--------
>>> from policies.model import RiskModel
>>> m = RiskModel()
>>> m.learn({"utilization": 0.9}, 1)
>>> key = b"0123456789abcdef0123456789abcdef"
>>> meta = {"version": m.version, "n_learned": 1, "labels_offset": 41, "created_ts": 1767225600000}
>>> raw = sign_snapshot(m.to_state(), key=key, meta=meta)
>>> snap = verify_snapshot(raw, key=key)
>>> (snap.version == m.version, snap.labels_offset)
(True, 41)
>>> try:
...     verify_snapshot(raw, key=b"another key, same length, wrong!!")
... except SnapshotRejected as e:
...     print(e.reason)
bad_mac
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import orjson

from features.names import FEATURE_SET
from policies.model import RiskModel, state_version

__all__ = [
    "MAGIC",
    "MAX_SNAPSHOT_BYTES",
    "MIN_KEY_BYTES",
    "Snapshot",
    "SnapshotRejected",
    "check_record_key",
    "claimed_offset",
    "record_key",
    "sign_snapshot",
    "verify_snapshot",
]

#: Names the wire format and its version; covered by the MAC.
MAGIC: Final = b"limitstream-snapshot/1\n"
_MAC_LEN: Final = hashlib.sha256().digest_size
#: Upper bound on a snapshot, checked before any work: Kafka's default ``message.max.bytes`` is
#: about 1 MB, and a snapshot of the default model with a 1 000-label quality window is ~30 KB.
MAX_SNAPSHOT_BYTES: Final = 1_000_000
#: HMAC-SHA256 keys shorter than this are refused (an empty key always): 16 bytes is the
#: shortest key that still gives 128-bit security against guessing.
MIN_KEY_BYTES: Final = 16
#: Metadata every snapshot carries (more keys may travel alongside, e.g. the quality summary).
_REQUIRED_META: Final = ("version", "n_learned", "labels_offset", "created_ts")


#: The record key of snapshots published before keys named their labels offset.
LEGACY_RECORD_KEY: Final = b"model"
_KEY_PREFIX: Final = b"model@"


class SnapshotRejected(Exception):
    """A snapshot that must not be loaded. ``reason`` is a stable code: ``no_key``,
    ``oversize``, ``bad_format``, ``bad_mac``, ``bad_payload``, ``version_mismatch``,
    ``bad_state`` (also: learnt on another feature set than this code's) or
    ``key_mismatch``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An authenticated, validated snapshot."""

    model_state: dict[str, Any]  #: the trainer's RiskModel.to_state()
    version: str  #: the model's version (checked against the state)
    n_learned: int  #: labels the model has learnt
    labels_offset: int  #: the trainer's position on the labels topic (-1: none yet)
    created_ts: int  #: epoch ms, as the trainer stated it
    meta: dict[str, Any] = field(default_factory=dict)  #: all metadata, extras included


def sign_snapshot(state: Mapping[str, Any], *, key: bytes, meta: Mapping[str, Any]) -> bytes:
    """Serialise and authenticate ``state`` with ``meta`` (which must carry ``version``,
    ``n_learned``, ``labels_offset`` and ``created_ts``, consistent with the state). The
    metadata is stamped with ``features``: this code's
    :data:`~features.names.FEATURE_SET`, the features the model was learnt on.

    Raises ``ValueError`` rather than publish a snapshot every worker would refuse (weak key,
    inconsistent metadata, oversize).
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the snapshot key must be at least {MIN_KEY_BYTES} bytes")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"snapshot meta lacks {', '.join(missing)}")
    _check_meta(meta, state, err=ValueError)
    payload = orjson.dumps({"meta": {**meta, "features": FEATURE_SET}, "model": dict(state)})
    raw = MAGIC + _mac(key, payload) + payload
    if len(raw) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"snapshot of {len(raw)} bytes exceeds {MAX_SNAPSHOT_BYTES}")
    return raw


def verify_snapshot(raw: bytes, *, key: bytes) -> Snapshot:
    """Authenticate and validate a snapshot read from the broker; raise
    :class:`SnapshotRejected` for anything else."""
    if len(key) < MIN_KEY_BYTES:
        raise SnapshotRejected("no_key", "no (or too short a) snapshot key is configured")
    if len(raw) > MAX_SNAPSHOT_BYTES:
        raise SnapshotRejected("oversize", f"{len(raw)} bytes > {MAX_SNAPSHOT_BYTES}")
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _MAC_LEN:
        raise SnapshotRejected("bad_format", "not a limitstream snapshot (format 1)")
    mac = raw[len(MAGIC) : len(MAGIC) + _MAC_LEN]
    payload = raw[len(MAGIC) + _MAC_LEN :]
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise SnapshotRejected("bad_mac", "authentication failed")
    # Authenticated from here on; still validated, since a trainer can have bugs.
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SnapshotRejected("bad_payload", str(exc)) from None
    if not isinstance(doc, dict):
        raise SnapshotRejected("bad_payload", "payload is not an object")
    meta, state = doc.get("meta"), doc.get("model")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise SnapshotRejected("bad_payload", "payload lacks meta or model")
    _check_meta(meta, state, err=None)
    if meta.get("features") != FEATURE_SET:
        # Weights learnt on other features would score this code's vectors as if the new
        # features were absent (and the dropped ones 0): refused, a worker decides on rules
        # until its trainer publishes a model learnt on the current features.
        raise SnapshotRejected(
            "bad_state", f"learnt on feature set {meta.get('features')!r}, this code computes "
            f"{FEATURE_SET!r}")
    try:
        model = RiskModel.from_state(state)
    except ValueError as exc:
        raise SnapshotRejected("bad_state", str(exc)) from None
    if model.version != meta["version"]:
        raise SnapshotRejected(
            "version_mismatch", f"meta says {meta['version']!r}, state is {model.version!r}"
        )
    return Snapshot(
        model_state=state,
        version=meta["version"],
        n_learned=meta["n_learned"],
        labels_offset=meta["labels_offset"],
        created_ts=meta["created_ts"],
        meta=meta,
    )


def record_key(labels_offset: int) -> bytes:
    """The record key a snapshot is published under: it names the snapshot's labels offset.

    >>> record_key(41), claimed_offset(record_key(41)), claimed_offset(b"model")
    (b'model@41', 41, None)
    """
    return _KEY_PREFIX + str(labels_offset).encode()


def claimed_offset(record_key: bytes | None) -> int | None:
    """The labels offset a record key names (unauthenticated: a hint to skip older snapshots
    unread); None for the legacy key or anything else."""
    if record_key is None or not record_key.startswith(_KEY_PREFIX):
        return None
    digits = record_key[len(_KEY_PREFIX):]
    return int(digits) if digits.isdigit() and len(digits) < 20 else None


def check_record_key(record_key: bytes | None, snap: Snapshot) -> None:
    """Refuse a verified snapshot published under another snapshot's key: compaction would let
    it evict that one. The legacy key is accepted (snapshots published before this check)."""
    if record_key != LEGACY_RECORD_KEY and record_key != _KEY_PREFIX + str(
            snap.labels_offset).encode():
        raise SnapshotRejected("key_mismatch", f"record key {record_key!r:.60} does not name "
                               f"labels offset {snap.labels_offset}")


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, MAGIC + payload, hashlib.sha256).digest()


def _check_meta(
    meta: Mapping[str, Any], state: Mapping[str, Any], err: type[ValueError] | None
) -> None:
    """Types of the required metadata, and its agreement with the state (the version is the
    state's content hash; the label count is the state's)."""

    def fail(reason: str, detail: str) -> NoReturn:
        if err is not None:
            raise err(f"{reason}: {detail}")
        raise SnapshotRejected(reason, detail)

    for k in ("n_learned", "labels_offset", "created_ts"):
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, int):
            fail("bad_payload", f"meta {k!r} must be an integer, got {v!r}")
    if meta["n_learned"] < 0 or meta["labels_offset"] < -1 or meta["created_ts"] < 0:
        fail("bad_payload", "meta n_learned, labels_offset or created_ts out of range")
    if not isinstance(meta.get("version"), str):
        fail("bad_payload", f"meta 'version' must be a string, got {meta.get('version')!r}")
    if meta["n_learned"] != state.get("n_learned"):
        fail("version_mismatch", "meta n_learned differs from the model state's")
    if err is not None and meta["version"] != state_version(state):
        fail("version_mismatch", "meta version is not the state's version")
