"""Prequential quality: rolling metrics equal their definitions over the window, calibration,
drift detection and recovery, and a state that survives a restart."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from policies.model import RiskModel
from policies.quality import CALIBRATION_BUCKETS, Quality
from tests.unit.test_model_data import auc, population


def noisy_stream(n: int, seed: int = 1) -> list[tuple[float, int]]:
    """Scores that carry some signal about their labels (AUC ~0.75)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = int(rng.random() < 0.15)
        p = min(max(rng.gauss(0.25 if y else 0.12, 0.08), 0.0), 1.0)
        out.append((p, y))
    return out


def prequential_losses(xs: list[dict[str, float]], y: list[int]) -> list[tuple[float, int]]:
    m, out = RiskModel("logistic"), []
    for x, t in zip(xs, y, strict=True):
        out.append((m.score(x), t))
        m.learn(x, t)
    return out


def test_rolling_metrics_are_those_of_the_window() -> None:
    q = Quality(window=200)
    stream = noisy_stream(1000)
    for i, (p, y) in enumerate(stream, start=1):
        q.update(p, y)
        if i % 100 == 0:
            win = stream[max(0, i - 200) : i]
            ys = [t for _, t in win]
            if 0 < sum(ys) < len(ys):
                assert q.roc_auc == pytest.approx(auc([p for p, _ in win], ys), abs=1e-12)
            loss = sum(-math.log(p if t else 1 - p) for p, t in win) / len(win)
            assert q.log_loss == pytest.approx(loss, rel=1e-9)
    assert q.n == 1000


def test_calibration_buckets() -> None:
    q = Quality(window=100)
    for p, y in [(0.05, 0), (0.05, 1), (0.15, 0), (0.95, 1), (1.0, 1)] * 4:
        q.update(p, y)
    cal = q.calibration()
    assert len(cal) == CALIBRATION_BUCKETS
    assert [b["n"] for b in cal] == [8, 4, 0, 0, 0, 0, 0, 0, 0, 8]
    assert cal[0] == {"lo": 0.0, "hi": 0.1, "n": 8, "mean_pd": 0.05, "observed": 0.5}
    assert cal[9]["mean_pd"] == pytest.approx(0.975) and cal[9]["observed"] == 1.0
    assert cal[5] == {"lo": 0.5, "hi": 0.6, "n": 0, "mean_pd": 0.0, "observed": 0.0}


def test_inputs_are_validated() -> None:
    q = Quality(window=10)
    for p, y in ((0.5, 2), (math.nan, 1), (1.5, 0), (-0.1, 0)):
        with pytest.raises(ValueError):
            q.update(p, y)
    assert q.n == 0
    with pytest.raises(ValueError):
        Quality(window=5)
    with pytest.raises(ValueError):
        Quality(recovery=0)


def test_a_stationary_stream_raises_no_drift() -> None:
    xs, y, _ = population(5000, seed=21)
    q = Quality(window=1000)
    for p, t in prequential_losses(xs, y):
        q.update(p, t)
    assert q.drift_detected_count == 0 and not q.in_drift


def flip_stream(seed: int = 33) -> tuple[list[tuple[float, int]], int]:
    """3 000 stationary labels, then the concept flips (risk ordering reversed at the same
    base rate). With seed 33, ADWIN fires once, 47 labels after the flip (in a wider run, 5 of
    6 seeds fired, 79-207 labels after the flip)."""
    a = population(3000, seed=seed)
    b = population(1500, seed=seed + 100, flip=True)
    return prequential_losses(a[0] + b[0], a[1] + b[1]), 3000


def test_a_concept_flip_is_detected_then_recovers() -> None:
    stream, flip_at = flip_stream()
    q = Quality(window=1000, recovery=300)
    detected_at = None
    for i, (p, t) in enumerate(stream):
        q.update(p, t)
        if q.drift_detected_count and detected_at is None:
            detected_at = i
            assert q.in_drift
    assert detected_at is not None and flip_at <= detected_at < flip_at + 300  # 47 measured
    # in_drift lasts exactly `recovery` labels after the last detection.
    q2 = Quality(window=1000, recovery=300)
    last = None
    for i, (p, t) in enumerate(stream):
        q2.update(p, t)
        if q2.drift_detected_count and (last is None or q2._since_drift == 0):
            last = i
        if last is not None:
            assert q2.in_drift == (i - last < 300)


def test_state_is_plain_data_and_restores() -> None:
    stream, _ = flip_stream()
    q = Quality(window=1000, recovery=300)
    for p, t in stream[:3100]:
        q.update(p, t)
    state = orjson.loads(orjson.dumps(q.to_state()))
    r = Quality.from_state(state)
    assert (r.n, r.drift_detected_count, r.in_drift) == (q.n, q.drift_detected_count, q.in_drift)
    assert r.roc_auc == q.roc_auc
    assert r.log_loss == pytest.approx(q.log_loss, rel=1e-12)
    assert r.calibration() == q.calibration()
    # Both continue identically on the rest of the stream (drift detections included).
    for p, t in stream[3100:]:
        q.update(p, t)
        r.update(p, t)
        assert (r.drift_detected_count, r.in_drift) == (q.drift_detected_count, q.in_drift)
    assert r.roc_auc == q.roc_auc
    assert r.log_loss == pytest.approx(q.log_loss, rel=1e-12)


def test_restore_replays_adwin_exactly_when_it_fits_the_window() -> None:
    """After a detection ADWIN restarts; while it holds at most `window` losses, the replay
    rebuilds it exactly: detections after the restore happen at the same labels."""
    stream, _ = flip_stream()
    q = Quality(window=1000, recovery=300)
    cut = None
    for i, (p, t) in enumerate(stream):
        q.update(p, t)
        if q.drift_detected_count and cut is None:
            cut = i + 400  # 400 labels into the restarted ADWIN
        if cut is not None and i == cut:
            break
    assert cut is not None and q.to_state()["adwin_n"] <= 1000
    r = Quality.from_state(q.to_state())
    assert r._adwin.width == q._adwin.width
    assert r._adwin.estimation == pytest.approx(q._adwin.estimation, rel=1e-12)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("format", 2),
        ("p", [0.5, 2.0]),
        ("y", [0, 3]),
        ("n", 1),
        ("since_drift", -1),
        ("window", 5),
        ("adwin_n", "x"),
    ],
)
def test_from_state_refuses_malformed_states(key: str, value: object) -> None:
    q = Quality(window=10)
    q.update(0.2, 0)
    q.update(0.7, 1)
    state = q.to_state()
    state[key] = value
    with pytest.raises(ValueError):
        Quality.from_state(state)
