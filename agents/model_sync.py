"""One trainer, many scorers: the Faust shell around :mod:`policies.scorer`.

* The **trainer** is an agent on the labels topic. The topic has one partition, so Faust gives
  it to exactly one worker. It learns each label prequentially and publishes an HMAC-signed
  snapshot every ``LIMITSTREAM_SNAPSHOT_EVERY_LABELS`` labels. When it (re)starts, it resumes
  from the newest snapshot and reads the labels between that snapshot and its group's
  committed offset directly, so a restart loses nothing it learnt.
* Every worker runs a **follower**: a group-less reader of the snapshots topic that verifies
  each snapshot (a snapshot that fails the HMAC check is refused, counted and logged) and
  installs the newest in the worker's :class:`~policies.scorer.Scorer`. Every decision then
  carries that snapshot's model version. "Newest" is by labels offset, never by position: at
  start-up the follower reads the whole topic, so a re-published old snapshot, however many
  copies follow the newest, is never served (records whose key names an older offset than the
  one served are skipped unverified: cheap, and safe since a genuine snapshot's key is true).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.metrics import Metrics
from policies.scorer import SEGMENTS, Scorer, Trainer
from policies.snapshot import (
    Snapshot,
    SnapshotRejected,
    check_record_key,
    claimed_offset,
    record_key,
    verify_snapshot,
)
from streams.app import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)

#: The follower's poll; also how stale a worker's model may be behind a new snapshot.
FOLLOW_POLL_MS = 500


class ModelSync:
    """The snapshot follower and the trainer agent of one worker."""

    def __init__(self, app: faust.App, settings: Settings, scorer: Scorer,
                 metrics: Metrics, model_kind: str = "logistic") -> None:
        self.app = app
        self.settings = settings
        self.scorer = scorer
        self.metrics = metrics
        self.model_kind = model_kind
        self.key = settings.model_hmac_key.value.encode()
        self.latest: Snapshot | None = None
        #: The record key of :attr:`latest`, and of the last snapshot this trainer published:
        #: the one its next snapshot replaces (a tombstone lets compaction drop it).
        self.latest_key: bytes | None = None
        self.published_key: bytes | None = None
        #: Set once the follower has read the snapshots topic up to its end at start-up.
        self.caught_up = asyncio.Event()
        self.trainer: Trainer | None = None
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.labels = app.topic(settings.topics.labels, partitions=1, **raw)
        self.snapshots = app.topic(settings.topics.model_snapshots, partitions=1, **raw)
        app.agent(self.labels, name="trainer")(self._train)
        app.task(self._follow)
        self.metrics.set_model(scorer.model.version if scorer.model else "untrained", "rules")
        # Every segment's series exists from the start: no snapshot yet reads as no labels
        # and an undefined AUC, not as a missing series.
        self.export_segments({name: {"n": 0, "roc_auc": None} for name in SEGMENTS})
        if not self.key:
            # Said once, here: the trainer still learns (its quality figures stay on the
            # metrics) but publishes nothing, and no snapshot can be verified, so every
            # decision of this worker is the rules' (what `limitstream replay --model off`
            # reproduces).
            log.warning("LIMITSTREAM_MODEL_HMAC_KEY is not set: this worker decides on rules "
                        "alone; its trainer publishes no model snapshot")

    # -- follower ------------------------------------------------------------------------------

    def offer(self, raw: bytes, key: bytes | None) -> bool:
        """Verify a snapshot read under record ``key`` and install it if it is newer (by
        labels offset) than the one served."""
        claimed = claimed_offset(key)
        if (self.latest is not None and claimed is not None
                and claimed <= self.latest.labels_offset):
            return False  # older than the one served, by its key: not worth verifying
        try:
            snap = verify_snapshot(raw, key=self.key)
            check_record_key(key, snap)
        except SnapshotRejected as exc:
            self.metrics.snapshots_refused.labels(reason=exc.reason).inc()
            log.error("model snapshot refused (%s): %s", exc.reason, exc)
            return False
        if self.latest is not None and snap.labels_offset <= self.latest.labels_offset:
            return False
        self.scorer.install_snapshot(snap)
        self.latest = snap
        self.latest_key = key
        self.metrics.snapshots_loaded.inc()
        self.metrics.set_model(snap.version, "rules" if self.scorer.fallback_reason else "model")
        quality = snap.meta.get("quality") or {}
        if isinstance(quality, dict):
            self.metrics.model_roc_auc.set(float(quality.get("roc_auc", float("nan"))))
            self.metrics.model_log_loss.set(float(quality.get("log_loss", float("nan"))))
        self.export_segments(snap.meta.get("segments"))
        return True

    def export_segments(self, segments: object) -> None:
        """The segments' quality from a verified snapshot's metadata on ``/metrics``; an
        undefined ROC AUC is NaN (a gap on the dashboard, not 0)."""
        if not isinstance(segments, dict):
            return
        for name in SEGMENTS:
            summary = segments.get(name)
            if not isinstance(summary, dict):
                continue
            auc, n = summary.get("roc_auc"), summary.get("n")
            self.metrics.model_segment_roc_auc.labels(segment=name).set(
                float(auc) if isinstance(auc, int | float) and not isinstance(auc, bool)
                else float("nan"))
            if isinstance(n, int) and not isinstance(n, bool):
                self.metrics.model_segment_labels.labels(segment=name).set(n)

    async def _follow(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.agent_errors.labels(stage="model_sync").inc()
                log.exception("model snapshot follower failed; restarting in %.0f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow_once(self) -> None:
        tp = TopicPartition(self.settings.topics.model_snapshots, 0)
        consumer = AIOKafkaConsumer(**aiokafka_kwargs(self.settings), group_id=None,
                                    enable_auto_commit=False, max_partition_fetch_bytes=2**24)
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # The whole topic: the newest snapshot by labels offset may be followed by any
            # number of re-published older ones.
            await consumer.seek_to_beginning(tp)
            if end == 0:
                self.caught_up.set()
            while True:
                batch = await consumer.getmany(tp, timeout_ms=FOLLOW_POLL_MS)
                for rec in batch.get(tp, []):
                    if rec.value is not None:  # None: a tombstone of a replaced snapshot
                        self.offer(rec.value, rec.key)
                if not self.caught_up.is_set() and await consumer.position(tp) >= end:
                    self.caught_up.set()
        finally:
            await consumer.stop()

    # -- trainer -------------------------------------------------------------------------------

    async def _train(self, stream: faust.StreamT[bytes]) -> None:
        batches = stream.take_events(500, within=1.0)  # type: ignore[attr-defined]
        async for events in batches:
            try:
                await self._learn_batch(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Labels are produced by limitstream itself; one that fails is a bug. Count it
                # and keep learning from the others.
                self.metrics.agent_errors.labels(stage="trainer").inc()
                log.exception("trainer batch failed")

    async def _resume(self, first_offset: int) -> Trainer:
        """The trainer to continue with: from the newest snapshot, plus the labels between
        that snapshot and ``first_offset`` (committed by a trainer that died before its next
        snapshot)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), timeout=30)
        trainer = (Trainer.restore(self.latest) if self.latest is not None
                   else Trainer(self.model_kind))
        if trainer.labels_offset + 1 < first_offset:
            await self._read_gap(trainer, trainer.labels_offset + 1, first_offset)
        return trainer

    async def _read_gap(self, trainer: Trainer, start: int, stop: int) -> None:
        tp = TopicPartition(self.settings.topics.labels, 0)
        consumer = AIOKafkaConsumer(**aiokafka_kwargs(self.settings), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while await consumer.position(tp) < stop:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                if not batch:
                    break
                for rec in batch.get(tp, []):
                    if rec.offset < stop:
                        await self._learn_one(trainer, rec.value, rec.offset)
        finally:
            await consumer.stop()

    async def _learn_one(self, trainer: Trainer, raw: bytes | None, offset: int) -> None:
        label = orjson.loads(raw or b"{}")
        # The engine's segment (it knows the policy's thin-file size), as the backtest learns;
        # older labels without one are segmented from their features.
        segment = label.get("segment")
        if trainer.learn(label["x"], int(label["label"]), offset,
                         segment=segment if segment in SEGMENTS else None):
            self.metrics.labels_learned.inc()
            # A snapshot at every multiple of the cadence, whatever the batches and restarts:
            # the versions the replay's in-process learning publishes at the same points.
            if trainer.model.n_learned % self.settings.snapshot_every_labels == 0:
                await self.publish(trainer)

    async def _learn_batch(self, events: list[Any]) -> None:
        first = events[0].message.offset
        if self.trainer is None or first > self.trainer.labels_offset + 1:
            # First batch, or the labels partition was elsewhere meanwhile (a rebalance): the
            # newest snapshot, plus the labels after it, is the truth.
            self.trainer = await self._resume(first)
        trainer = self.trainer
        drift_before = trainer.quality.drift_detected_count
        for ev in events:
            await self._learn_one(trainer, ev.message.value, ev.message.offset)
        if trainer.quality.drift_detected_count > drift_before:
            self.metrics.drift_detections.inc(trainer.quality.drift_detected_count - drift_before)

    async def publish(self, trainer: Trainer) -> None:
        if not self.key:
            return  # a rules-only worker: said once at start-up (__init__)
        raw = trainer.snapshot(self.key, created_ts=int(time.time() * 1000))
        key = record_key(trainer.labels_offset)
        # Wait for delivery: a restarted trainer resumes from the newest delivered snapshot.
        await (await self.snapshots.send(key=key, value=raw))
        previous = self.published_key or self.latest_key
        if previous is not None and previous != key:
            # The replaced snapshot's tombstone: compaction keeps the topic at one snapshot.
            await self.snapshots.send(key=previous, value=None)
        self.published_key = key
