"""Learning inside one process: the trainer and the scorer side by side, as the live system has
them on different workers. Used by ``limitstream replay`` and the backtest.

Live, labels travel to the trainer and snapshots back to the workers; here each label the
engine emits is learnt at once, and every ``snapshot_every`` labels the scorer installs a
frozen copy of the model — the same cadence as the live trainer's snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from policies.engine import LABELS, Output
from policies.model import RiskModel
from policies.scorer import Scorer, Trainer


class InProcessLearning:
    def __init__(self, scorer: Scorer, kind: str = "logistic", snapshot_every: int = 200,
                 keep_examples: bool = False) -> None:
        self.scorer = scorer
        self.trainer = Trainer(kind)
        self.snapshot_every = snapshot_every
        self.offset = -1
        self.snapshots = 0
        #: (labels learnt, rolling ROC AUC, rolling log loss) at each snapshot: quality over time.
        self.history: list[tuple[int, float, float]] = []
        #: With ``keep_examples``, every label learnt, in order: (features at issue, label, the
        #: trainer's prequential score before learning it, thin file), the honest benchmark's
        #: material (the backtest keeps them; a replay of a large log would not fit them).
        self.keep_examples = keep_examples
        self.examples: list[tuple[dict[str, float], int, float, bool]] = []

    def observe(self, outputs: Iterable[Output]) -> None:
        """Learn the labels among ``outputs``, in order."""
        for out in outputs:
            if out.topic != LABELS:
                continue
            self.offset += 1
            x, y, segment = out.value["x"], int(out.value["label"]), out.value.get("segment")
            # What learn() judges: the score before learning (computed only when kept).
            p = self.trainer.model.score(x) if self.keep_examples else 0.0
            learnt = self.trainer.learn(x, y, self.offset, segment=segment)
            if learnt and self.keep_examples:
                self.examples.append((x, y, p, segment == "current_thin"))
            # At every multiple of the cadence, as the live trainer does.
            if learnt and self.trainer.model.n_learned % self.snapshot_every == 0:
                self.publish()

    def publish(self) -> None:
        # A frozen copy, as a worker has: the trainer keeps learning, the scorer does not.
        model = RiskModel.from_state(self.trainer.model.to_state())
        self.scorer.install(model, self.trainer.summary())
        self.snapshots += 1
        q = self.trainer.quality
        self.history.append((model.n_learned, q.roc_auc, q.log_loss))

    def report(self) -> dict[str, Any]:
        q = self.trainer.quality
        calibration = q.calibration()
        return {
            "labels_learnt": self.trainer.model.n_learned,
            "snapshots": self.snapshots,
            "model_version": self.trainer.model.version,
            "served_version": self.scorer.model.version if self.scorer.model else "untrained",
            "fallback_reason": self.scorer.fallback_reason,
            "prequential_roc_auc": q.roc_auc,
            "prequential_log_loss": q.log_loss,
            "drift_detections": q.drift_detected_count,
            "calibration": list(calibration),
            # As the worker's /metrics read them: an undefined AUC is None, a gap.
            "segments": self.trainer.segment_summaries(),
        }
