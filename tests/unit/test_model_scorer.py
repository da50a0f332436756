"""The worker's Scorer (model or rules, and why) and the Trainer (prequential, idempotent per
offset, restorable from its own snapshot)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import pytest

from policies.model import RiskModel
from policies.risk import Risk
from policies.scorer import (
    MODEL_BELOW_FLOOR,
    MODEL_COLD,
    MODEL_DRIFT,
    Gate,
    QualitySummary,
    Scorer,
    Trainer,
)
from policies.snapshot import verify_snapshot
from tests.unit.test_model_data import population

KEY = b"an-hmac-key-of-32-bytes-exactly!"
Data = tuple[list[dict[str, float]], list[int]]
GATE = Gate(min_labels=500, min_auc=0.70, max_log_loss=0.45)
GOOD = QualitySummary(n=2000, roc_auc=0.82, log_loss=0.30, in_drift=False)
#: The synthetic population's labels are all learnt, whatever their overdue amount (the
#: arrears-at-issue segment is tested in test_labels.py).
SEG = "current_established"


def rules(x: Mapping[str, float]) -> Risk:
    return Risk(pd=0.2 if x.get("late_count_12", 0) else 0.05, source="rules", model_version="r1")


@pytest.fixture(scope="module")
def stream() -> Data:
    xs, y, _ = population(2200, seed=5)
    return xs, y


def train(
    xs: list[dict[str, float]], y: list[int], start: int = 0, t: Trainer | None = None
) -> Trainer:
    t = t or Trainer("logistic")
    for i, (x, label) in enumerate(zip(xs, y, strict=True), start=start):
        t.learn(x, label, offset=i, segment=SEG)
    return t


# -- Scorer --------------------------------------------------------------------------------------


def test_nothing_installed_is_cold(stream: Data) -> None:
    s = Scorer(GATE, rules)
    r = s.risk(stream[0][0])
    assert (r.source, r.fallback_reason, r.model_version) == ("rules", MODEL_COLD, "r1")


def test_too_few_labels_is_cold(stream: Data) -> None:
    xs, y = stream
    t = train(xs[:499], y[:499])
    s = Scorer(GATE, rules)
    s.install(t.model, GOOD)
    assert s.risk(xs[0]).fallback_reason == MODEL_COLD
    t.learn(xs[499], y[499], offset=499, segment=SEG)
    s.install(t.model, GOOD)
    assert s.fallback_reason == ""


def test_a_good_model_decides_and_explains(stream: Data) -> None:
    xs, y = stream
    t = train(xs[:2000], y[:2000])
    s = Scorer(GATE, rules)
    s.install(t.model, t.summary())
    assert t.summary().roc_auc > GATE.min_auc and t.summary().log_loss < GATE.max_log_loss
    r = s.risk(xs[2100])
    assert r == Risk(
        pd=t.model.score(xs[2100]),
        source="model",
        model_version=t.model.version,
        fallback_reason="",
        contributions=t.model.contributions(xs[2100]),
    )
    assert 0 < len(r.contributions) <= 5


def test_a_model_that_learnt_noise_is_below_the_floor(stream: Data) -> None:
    xs, _ = stream
    rng = random.Random(0)
    noise = [int(rng.random() < 0.15) for _ in xs]  # labels unrelated to the features
    t = train(xs[:1500], noise[:1500])
    assert t.model.n_learned >= GATE.min_labels
    assert t.quality.roc_auc < GATE.min_auc  # measured 0.52
    s = Scorer(GATE, rules)
    s.install(t.model, t.summary())
    assert s.risk(xs[0]).fallback_reason == MODEL_BELOW_FLOOR


@pytest.mark.parametrize(
    "summary",
    [
        QualitySummary(n=2000, roc_auc=0.69, log_loss=0.30, in_drift=False),
        QualitySummary(n=2000, roc_auc=0.82, log_loss=0.46, in_drift=False),
        QualitySummary(n=2000, roc_auc=math.nan, log_loss=0.30, in_drift=False),
    ],
)
def test_floor_applies_to_auc_and_log_loss(stream: Data, summary: QualitySummary) -> None:
    xs, y = stream
    s = Scorer(GATE, rules)
    s.install(train(xs[:600], y[:600]).model, summary)
    assert s.risk(xs[0]).fallback_reason == MODEL_BELOW_FLOOR


def test_a_concept_flip_sends_decisions_to_the_rules() -> None:
    a = population(3000, seed=33)
    b = population(1000, seed=133, flip=True)  # ADWIN fires 47 labels after the flip
    t = Trainer("logistic", window=1000, recovery=300)
    s = Scorer(GATE, rules)
    t = train(a[0], a[1], t=t)
    s.install(t.model, t.summary())
    assert s.fallback_reason == ""
    reasons = []
    for i, (x, label) in enumerate(zip(b[0], b[1], strict=True), start=3000):
        t.learn(x, label, offset=i, segment=SEG)
        s.install(t.model, t.summary())
        reasons.append(s.risk(x).fallback_reason)
    assert t.quality.drift_detected_count >= 1
    first = reasons.index(MODEL_DRIFT)
    assert first < 300  # detection delay: 47 labels with this seed
    # Later detections only extend the spell: at least `recovery` labels on the rules.
    assert reasons[first : first + 300] == [MODEL_DRIFT] * 300
    # Measured: 47 x "", 300 x MODEL_DRIFT, then 653 x MODEL_BELOW_FLOOR: once the drift spell
    # ends, the rolling AUC (0.55 at the end) keeps the rules in charge until the model recovers.
    assert reasons[first + 300 :] == [MODEL_BELOW_FLOOR] * (len(reasons) - first - 300)


# -- Trainer -------------------------------------------------------------------------------------


def test_trainer_is_prequential_and_skips_replayed_offsets(stream: Data) -> None:
    xs, y = stream
    t = Trainer("logistic")
    assert t.labels_offset == -1
    p0 = t.model.score(xs[0])
    assert t.learn(xs[0], y[0], offset=10, segment=SEG)
    assert t.quality.n == 1 and t.quality._pairs[0] == (p0, y[0])  # scored before learning
    version = t.model.version
    for off in (10, 3, -1):
        assert not t.learn(xs[1], y[1], offset=off, segment=SEG)
    assert (t.model.version, t.model.n_learned, t.quality.n) == (version, 1, 1)
    assert t.learn(xs[1], y[1], offset=11, segment=SEG) and t.labels_offset == 11
    with pytest.raises(ValueError):
        t.learn(xs[2], 2, offset=12, segment=SEG)
    assert (t.labels_offset, t.quality.n, t.model.n_learned) == (11, 2, 2)


@pytest.mark.parametrize("kind", ["logistic", "logistic_adagrad"])
def test_restore_continues_identically(stream: Data, kind: str) -> None:
    xs, y = stream
    a = train(xs[:1500], y[:1500], t=Trainer(kind))
    snap = verify_snapshot(a.snapshot(KEY, created_ts=1_767_225_600_000), key=KEY)
    assert snap.labels_offset == 1499 and snap.version == a.model.version
    assert QualitySummary.from_dict(snap.meta["quality"]) == a.summary()
    b = Trainer.restore(snap)
    assert (b.model.version, b.labels_offset, b.quality.n) == (a.model.version, 1499, 1500)
    # After a restart the labels topic replays from an earlier committed offset: skipped.
    replayed = [b.learn(xs[i], y[i], offset=i, segment=SEG) for i in range(1200, 1500)]
    assert not any(replayed)
    for i in range(1500, 1700):  # the same 200 further labels on both
        assert a.learn(xs[i], y[i], offset=i, segment=SEG)
        assert b.learn(xs[i], y[i], offset=i, segment=SEG)
    probe = xs[2000:]
    assert max(abs(a.model.score(x) - b.model.score(x)) for x in probe) <= 1e-12
    assert a.model.version == b.model.version
    assert a.quality.roc_auc == b.quality.roc_auc
    assert a.quality.log_loss == pytest.approx(b.quality.log_loss, rel=1e-12)
    assert (a.quality.n, a.quality.in_drift) == (b.quality.n, b.quality.in_drift)


def test_install_snapshot_on_a_worker(stream: Data) -> None:
    xs, y = stream
    t = train(xs[:1000], y[:1000])
    s = Scorer(GATE, rules)
    s.install_snapshot(verify_snapshot(t.snapshot(KEY, created_ts=1), key=KEY))
    assert s.model is not None and s.model.version == t.model.version
    assert s.risk(xs[1500]).pd == t.model.score(xs[1500])


def test_gate_and_summary_are_validated() -> None:
    with pytest.raises(ValueError):
        Gate(min_labels=-1, min_auc=0.7, max_log_loss=0.5)
    with pytest.raises(ValueError):
        Gate(min_labels=1, min_auc=1.5, max_log_loss=0.5)
    with pytest.raises(ValueError):
        Gate(min_labels=1, min_auc=0.7, max_log_loss=math.inf)
    assert QualitySummary.from_dict(GOOD.to_dict()) == GOOD
    for bad in ({**GOOD.to_dict(), "roc_auc": None}, {**GOOD.to_dict(), "in_drift": 1}, {}):
        with pytest.raises(ValueError):
            QualitySummary.from_dict(bad)


def test_untrained_model_installed_is_cold() -> None:
    s = Scorer(Gate(min_labels=0, min_auc=0.0, max_log_loss=10.0), rules)
    s.install(RiskModel(), GOOD)
    assert s.risk({}).fallback_reason == MODEL_COLD


def test_segments_travel_in_the_snapshot_and_resume(stream: Data) -> None:
    """Each segment's quality is in the snapshot: summarised for every worker's /metrics (an
    undefined AUC is None, a gap) and as state, so a restarted trainer judges on."""
    xs, y = stream
    a = Trainer("logistic")
    for i in range(600):
        a.learn(xs[i], y[i], offset=i, segment="current_thin" if i % 3 else "arrears")
    snap = verify_snapshot(a.snapshot(KEY, created_ts=1), key=KEY)
    segments = snap.meta["segments"]
    assert segments["current_thin"]["n"] == 400 and segments["arrears"]["n"] == 200
    assert segments["current_thin"]["roc_auc"] == a.segments["current_thin"].roc_auc
    # No label of this segment yet: no AUC, not 0.
    assert segments["current_established"] == {"n": 0, "roc_auc": None, "log_loss": None,
                                               "in_drift": False}
    b = Trainer.restore(snap)
    assert {k: q.n for k, q in b.segments.items()} == {k: q.n for k, q in a.segments.items()}
    for i in range(600, 700):
        assert a.learn(xs[i], y[i], offset=i, segment="current_thin")
        assert b.learn(xs[i], y[i], offset=i, segment="current_thin")
    assert b.segments["current_thin"].roc_auc == a.segments["current_thin"].roc_auc
