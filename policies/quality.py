"""Prequential quality of the risk model: every label is scored *before* it is learnt, and the
score is judged here, over a rolling window, with River's metrics and drift detector.

* **ROC AUC**: ``metrics.RollingROCAUC`` over the last ``window`` labels. It is exact (it ranks
  the window). ``utils.Rolling(metrics.ROCAUC, window_size=..., n_thresholds=...)`` was measured
  against the exact AUC of the window on the test population (PDs mostly below 0.3, 6 000
  labels): with River's default 10 thresholds it is biased by -0.026 (worst -0.047) — enough to
  push a good model under a 0.70 floor — and still -0.001 with 50 thresholds, at 29 µs per update
  and 37 µs per read; ``RollingROCAUC`` was exact at about 3 µs per update + read. It reads 0.0
  while the window lacks either class (so a gate on it stays closed).
* **Log loss**: ``utils.Rolling(metrics.LogLoss, window_size=window)`` (class and kwargs, not an
  instance).
* **Calibration**: 10 buckets of predicted PD over the same window; mean predicted against
  observed default rate, and counts.
* **Drift**: ``drift.ADWIN`` (River's defaults, ``delta=0.002``) on the per-example log loss. It
  is fed only after the first ``window`` labels: until then the loss is the model's learning
  curve, which ADWIN would (rightly) report as a change. Every detection counts, whichever way
  the loss moved: the world changed, and the model must re-earn trust. ``in_drift`` is True from
  a detection until ``recovery`` further labels pass without one. Measured on the test
  population: no detection over 3 x 19 000 stationary labels; a concept flip (risk ordering
  reversed at the same base rate) was detected in 5 of 6 seeds, 79-207 labels after the flip.
  ADWIN on the loss cannot see a drift that leaves the loss unchanged (e.g. a flip that also
  lowers the base rate): the AUC floor of the gate covers those.

State (:meth:`Quality.to_state` / :meth:`Quality.from_state`) is plain data. River's metric and
ADWIN objects cannot be rebuilt from plain numbers (``RollingROCAUC`` and ADWIN live in Rust), so
the state keeps the last ``window`` ``(p, y)`` pairs and the counters, and the metrics are rebuilt
by replaying the pairs: the AUC and the calibration exactly, the rolling log loss up to float
rounding (River's rolling mean is updated incrementally). ADWIN is rebuilt by replaying the
losses it has seen since its last reset (River resets ADWIN on the update after a detection, so
its state is a function of exactly those): exact when there are at most ``window`` of them,
otherwise the replay of the last ``window`` is an approximation (a shorter memory, so a slightly
slower detection of a slow drift right after a restart). Detections during a replay are not
counted again.

Examples
--------
>>> q = Quality(window=100)
>>> for i in range(200):
...     y = int(i % 5 == 0)
...     q.update(0.6 if y else 0.05, y)
>>> q.n, round(q.roc_auc, 3), round(q.log_loss, 3)
(200, 1.0, 0.143)
>>> [b["n"] for b in q.calibration()], q.in_drift
([80, 0, 0, 0, 0, 0, 20, 0, 0, 0], False)
>>> r = Quality.from_state(q.to_state())
>>> (r.n, r.roc_auc) == (q.n, q.roc_auc)
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from river import drift, metrics, utils

__all__ = ["CALIBRATION_BUCKETS", "Quality"]

#: Calibration buckets of the predicted PD: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
CALIBRATION_BUCKETS: Final = 10
_STATE_FORMAT: Final = 1
_P_CLAMP: Final = 1e-15  # River's LogLoss clamps p the same way


def _loss(p: float, y: int) -> float:
    p = min(max(p, _P_CLAMP), 1.0 - _P_CLAMP)
    return -math.log(p) if y else -math.log(1.0 - p)


class Quality:
    """Rolling prequential quality of a probabilistic binary classifier.

    Parameters
    ----------
    window
        Number of most recent labels the AUC, log loss and calibration cover; also the warm-up
        before the drift detector starts.
    recovery
        Labels without a detection after which ``in_drift`` clears.
    delta
        ADWIN's significance level.
    """

    __slots__ = (
        "_adwin",
        "_adwin_n",
        "_auc",
        "_log_loss",
        "_pairs",
        "_since_drift",
        "delta",
        "drift_detected_count",
        "n",
        "recovery",
        "window",
    )

    def __init__(self, window: int = 1000, recovery: int = 500, delta: float = 0.002) -> None:
        if window < 10:
            raise ValueError(f"window must be at least 10, got {window}")
        if recovery < 1:
            raise ValueError(f"recovery must be at least 1, got {recovery}")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.window = window
        self.recovery = recovery
        self.delta = delta
        #: Labels seen since the beginning (not only the window).
        self.n = 0
        #: ADWIN detections since the beginning.
        self.drift_detected_count = 0
        self._since_drift: int | None = None  # labels since the last detection
        self._pairs: deque[tuple[float, int]] = deque(maxlen=window)
        # River leaves these two constructors unannotated (mypy strict: no-untyped-call).
        self._auc: Any = metrics.RollingROCAUC(window_size=window)  # type: ignore[no-untyped-call]
        self._log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self._adwin: Any = drift.ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self._adwin_n = 0  # losses fed to the current ADWIN since its last reset

    def update(self, p: float, y: int) -> None:
        """Record one prequential example: ``p`` was the score *before* learning label ``y``."""
        if y not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {y!r}")
        p = float(p)
        if not 0.0 <= p <= 1.0:  # also refuses NaN
            raise ValueError(f"score must be a probability, got {p!r}")
        y = int(y)
        self._record(p, y)
        self.n += 1
        detected = self.n > self.window and self._feed_adwin(_loss(p, y))
        if detected:
            self.drift_detected_count += 1
            self._since_drift = 0
        elif self._since_drift is not None:
            self._since_drift += 1

    # -- readings ----------------------------------------------------------------------------

    @property
    def roc_auc(self) -> float:
        """Exact ROC AUC of the window (0.0 while it lacks either class)."""
        return float(self._auc.get())

    @property
    def auc_defined(self) -> bool:
        """True when the window holds both classes: otherwise :attr:`roc_auc` reads 0.0 but
        the AUC is undefined (a report shows a gap, not 0)."""
        positives = sum(y for _, y in self._pairs)
        return 0 < positives < len(self._pairs)

    @property
    def log_loss(self) -> float:
        """Mean log loss of the window (0.0 when empty)."""
        return float(self._log_loss.get())

    @property
    def in_drift(self) -> bool:
        """True from a drift detection until ``recovery`` labels pass without another."""
        return self._since_drift is not None and self._since_drift < self.recovery

    def calibration(self) -> list[dict[str, float]]:
        """Per bucket of predicted PD over the window: bounds, count, mean predicted PD and
        observed default rate (both 0.0 for an empty bucket)."""
        ps: list[list[float]] = [[] for _ in range(CALIBRATION_BUCKETS)]
        ys = [0] * CALIBRATION_BUCKETS
        for p, y in self._pairs:
            b = min(int(p * CALIBRATION_BUCKETS), CALIBRATION_BUCKETS - 1)
            ps[b].append(p)
            ys[b] += y
        return [
            {
                "lo": b / CALIBRATION_BUCKETS,
                "hi": (b + 1) / CALIBRATION_BUCKETS,
                "n": len(ps[b]),
                "mean_pd": math.fsum(ps[b]) / len(ps[b]) if ps[b] else 0.0,
                "observed": ys[b] / len(ps[b]) if ps[b] else 0.0,
            }
            for b in range(CALIBRATION_BUCKETS)
        ]

    def __repr__(self) -> str:
        return (
            f"Quality(n={self.n}, roc_auc={self.roc_auc:.4f}, log_loss={self.log_loss:.4f}, "
            f"drifts={self.drift_detected_count}, in_drift={self.in_drift})"
        )

    # -- plain-data state --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Counters, settings and the window of ``(p, y)`` pairs (see the module docstring)."""
        return {
            "format": _STATE_FORMAT,
            "window": self.window,
            "recovery": self.recovery,
            "delta": self.delta,
            "n": self.n,
            "drift_detected_count": self.drift_detected_count,
            "since_drift": self._since_drift,
            "adwin_n": self._adwin_n,
            "p": [p for p, _ in self._pairs],
            "y": [y for _, y in self._pairs],
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> Quality:
        """Rebuild by replay (see the module docstring). Raises ``ValueError`` on a malformed
        state."""
        if not isinstance(d, Mapping) or d.get("format") != _STATE_FORMAT:
            raise ValueError("unsupported quality state")
        delta = d.get("delta")
        if isinstance(delta, bool) or not isinstance(delta, int | float):
            raise ValueError(f"quality state: bad delta {delta!r}")
        q = cls(window=_int(d, "window"), recovery=_int(d, "recovery"), delta=float(delta))
        ps, ys = d.get("p"), d.get("y")
        if not isinstance(ps, list) or not isinstance(ys, list) or len(ps) != len(ys):
            raise ValueError("quality state: p and y must be lists of the same length")
        if len(ps) > q.window:
            raise ValueError("quality state: more pairs than the window")
        pairs: list[tuple[float, int]] = []
        for p, y in zip(ps, ys, strict=True):
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValueError(f"quality state: bad score {p!r}")
            if isinstance(y, bool) or y not in (0, 1):
                raise ValueError(f"quality state: bad label {y!r}")
            pairs.append((float(p), int(y)))
        n = _int(d, "n")
        if n < len(pairs):
            raise ValueError("quality state: n is smaller than the window it holds")
        since = d.get("since_drift")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise ValueError(f"quality state: bad since_drift {since!r}")
        if since is not None and since < 0:
            raise ValueError(f"quality state: bad since_drift {since!r}")
        adwin_n = _int(d, "adwin_n")

        for p, y in pairs:
            q._record(p, y)
        # Replay into ADWIN what the live one had seen since its last reset (at most the window).
        for p, y in pairs[len(pairs) - min(adwin_n, len(pairs)) :]:
            q._feed_adwin(_loss(p, y))
        q.n = n
        q.drift_detected_count = _int(d, "drift_detected_count")
        q._since_drift = since
        return q

    # -- internals ---------------------------------------------------------------------------

    def _record(self, p: float, y: int) -> None:
        self._pairs.append((p, y))
        self._auc.update(y, p)
        self._log_loss.update(y, p)

    def _feed_adwin(self, loss: float) -> bool:
        if self._adwin.drift_detected:
            self._adwin_n = 0  # River resets ADWIN on the update after a detection
        self._adwin.update(loss)
        self._adwin_n += 1
        return bool(self._adwin.drift_detected)


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"quality state: {key!r} must be a non-negative integer, got {v!r}")
    return v
