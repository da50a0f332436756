"""A worker without ``LIMITSTREAM_MODEL_HMAC_KEY`` says once, at start-up, that it decides on
rules; its trainer then learns label after label without logging anything more."""

from __future__ import annotations

import logging
import math
import random

import pytest
from prometheus_client import CollectorRegistry

from agents.metrics import Metrics
from agents.model_sync import ModelSync
from policies.engine_factory import engine_for
from policies.scorer import Trainer
from policies.snapshot import record_key
from policies.spec import load_policy
from streams.app import create_app
from streams.settings import Settings

#: Labels learnt: three snapshot points of the trainer's cadence.
LABELS = 600


def build(settings: Settings, registry: CollectorRegistry | None = None) -> ModelSync:
    app = create_app(settings)
    _, scorer = engine_for(load_policy(settings.policy_file), settings)
    return ModelSync(app, settings, scorer, Metrics.create(registry or CollectorRegistry()))


def label(rng: random.Random) -> bytes:
    late = rng.random() < 0.2
    return (b'{"x": {"late_count_12": %d, "utilization": %.3f}, "label": %d}'
            % (int(late), rng.random(), int(late)))


async def test_a_rules_only_trainer_says_so_once_at_start_up(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(broker="kafka://127.0.0.1:1", snapshot_every_labels=200)
    assert not settings.model_hmac_key.value
    with caplog.at_level(logging.INFO, logger="agents.model_sync"):
        sync = build(settings)
        said = [r for r in caplog.records if r.name == "agents.model_sync"]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert "LIMITSTREAM_MODEL_HMAC_KEY" in said[0].getMessage()
        assert "rules" in said[0].getMessage()

        trainer = Trainer(sync.model_kind)
        rng = random.Random(3)
        for offset in range(LABELS):
            await sync._learn_one(trainer, label(rng), offset)
    assert trainer.model.n_learned == LABELS  # it passed the snapshot points
    assert sync.published_key is None  # and published nothing
    assert [r for r in caplog.records if r.name == "agents.model_sync"] == said


def test_a_worker_with_a_key_says_nothing_at_start_up(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agents.model_sync"):
        build(Settings.from_env({"LIMITSTREAM_BROKER": "kafka://127.0.0.1:1",
                                 "LIMITSTREAM_MODEL_HMAC_KEY": "a-key-of-at-least-16-bytes"}))
    assert not [r for r in caplog.records if r.name == "agents.model_sync"]


async def test_the_trainer_learns_each_label_in_the_segment_the_engine_gave_it() -> None:
    sync = build(Settings(broker="kafka://127.0.0.1:1"))
    trainer = Trainer(sync.model_kind)
    # Twelve resolved installments read as an established file; the engine (whose policy may
    # count a thin file otherwise) said thin: its word counts. No segment, or an unknown one:
    # segmented from the features.
    x = b'{"ontime_count_12": 12, "late_count_12": 0}'
    for offset, seg in enumerate((b', "segment": "current_thin"', b"", b', "segment": "bogus"')):
        await sync._learn_one(trainer, b'{"x": %s, "label": 0%s}' % (x, seg), offset)
    assert trainer.segments["current_thin"].n == 1
    assert trainer.segments["current_established"].n == 2


def test_a_served_snapshot_exports_each_segments_quality() -> None:
    """The served model's quality per label segment is on every worker's /metrics; a segment
    without an AUC yet reads NaN (a gap), not 0."""
    key = "a-key-of-at-least-16-bytes"
    registry = CollectorRegistry()
    sync = build(Settings.from_env({"LIMITSTREAM_BROKER": "kafka://127.0.0.1:1",
                                    "LIMITSTREAM_MODEL_HMAC_KEY": key}), registry)
    def value(name: str, segment: str) -> float:
        for family in registry.collect():
            for s in family.samples:
                if s.name == name and s.labels == {"segment": segment}:
                    return float(s.value)
        raise AssertionError(f"{name}{{segment={segment!r}}} not exported")

    # Before any snapshot: every segment's series, with no labels and no AUC.
    assert value("limitstream_model_segment_labels", "arrears") == 0
    assert math.isnan(value("limitstream_model_segment_roc_auc", "current_established"))
    trainer = Trainer(sync.model_kind)
    rng = random.Random(5)
    for offset in range(LABELS):
        late = rng.random() < 0.2
        trainer.learn({"late_count_12": float(late), "utilization": rng.random()}, int(late),
                      offset, segment="current_established" if offset % 4 else "arrears")
    raw = trainer.snapshot(key.encode(), created_ts=1)
    assert sync.offer(raw, record_key(trainer.labels_offset))

    auc = value("limitstream_model_segment_roc_auc", "current_established")
    assert auc == trainer.segments["current_established"].roc_auc and 0.5 < auc <= 1.0
    assert value("limitstream_model_segment_labels", "arrears") == LABELS // 4
    assert math.isnan(value("limitstream_model_segment_roc_auc", "current_thin"))
    assert value("limitstream_model_segment_labels", "current_thin") == 0
