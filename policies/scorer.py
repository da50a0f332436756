"""Where the model meets a decision: the worker's :class:`Scorer` (model or rules, and why) and
the single :class:`Trainer` (prequential learning from delayed labels, signed snapshots).

Both are pure: no clock, no I/O. The trainer agent feeds ``Trainer.learn`` from the labels topic
and publishes ``Trainer.snapshot(...)``; every worker verifies what it reads
(:func:`policies.snapshot.verify_snapshot`) and calls ``Scorer.install_snapshot``; the offline
replay drives the same two classes.

Examples
--------
>>> from policies.risk import Risk
>>> from policies.snapshot import verify_snapshot
>>> rules = lambda x: Risk(pd=0.1, source="rules", model_version="rules")
>>> scorer = Scorer(Gate(min_labels=500, min_auc=0.7, max_log_loss=0.5), rules)
>>> scorer.risk({"utilization": 0.5}).fallback_reason
'MODEL_COLD'
>>> trainer = Trainer("logistic")
>>> trainer.learn({"utilization": 0.9}, 1, offset=0), trainer.learn({"utilization": 0.9}, 1, 0)
(True, False)
>>> key = b"0123456789abcdef0123456789abcdef"
>>> snap = verify_snapshot(trainer.snapshot(key, created_ts=1767225600000), key=key)
>>> scorer.install_snapshot(snap)
>>> r = scorer.risk({"utilization": 0.9})
>>> (r.source, r.fallback_reason)
('rules', 'MODEL_COLD')
>>> Trainer.restore(snap).labels_offset
0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from policies.model import RiskModel
from policies.quality import Quality
from policies.risk import Risk
from policies.snapshot import Snapshot, sign_snapshot

__all__ = [
    "MODEL_BELOW_FLOOR",
    "MODEL_COLD",
    "MODEL_DRIFT",
    "SEGMENTS",
    "THIN_FILE_INSTALLMENTS",
    "Gate",
    "QualitySummary",
    "Scorer",
    "Trainer",
    "label_segment",
]

#: Fallback reason codes (registered with the policy's reason codes).
MODEL_COLD: Final = "MODEL_COLD"  # no model yet, or fewer labels learnt than the gate needs
MODEL_BELOW_FLOOR: Final = "MODEL_BELOW_FLOOR"  # rolling AUC under / log loss over the floor
MODEL_DRIFT: Final = "MODEL_DRIFT"  # the drift detector fired recently

#: Resolved installments below which an account is a thin file, when the label does not say
#: (the default policy's ``model.thin_file_installments``).
THIN_FILE_INSTALLMENTS: Final = 3
#: The segments the trainer judges apart. Only ``current_*`` examples are learnt: an
#: installment issued while the account was already in arrears would teach the model that
#: arrears predict arrears, and inflate its quality (DESIGN §5).
SEGMENTS: Final = ("current_thin", "current_established", "arrears")


def label_segment(x: Mapping[str, float], thin_file: bool | None = None) -> str:
    """The segment of a labelled example from its features at issue: ``arrears`` when an
    amount was overdue then, else ``current_thin`` or ``current_established`` (``thin_file``
    as the label says, else fewer than :data:`THIN_FILE_INSTALLMENTS` resolved installments).

    Examples
    --------
    >>> label_segment({"overdue_amount": 500.0})
    'arrears'
    >>> label_segment({"ontime_count_12": 5.0}), label_segment({}, thin_file=True)
    ('current_established', 'current_thin')
    """
    if x.get("overdue_amount", 0.0) > 0:
        return "arrears"
    if thin_file is None:
        resolved = x.get("ontime_count_12", 0.0) + x.get("late_count_12", 0.0)
        thin_file = resolved < THIN_FILE_INSTALLMENTS
    return "current_thin" if thin_file else "current_established"


@dataclass(frozen=True, slots=True)
class Gate:
    """When the model may decide instead of the rules (from the policy file)."""

    min_labels: int  #: labels the model must have learnt
    min_auc: float  #: rolling prequential ROC AUC at least this
    max_log_loss: float  #: rolling prequential log loss at most this

    def __post_init__(self) -> None:
        if self.min_labels < 0:
            raise ValueError(f"min_labels must be >= 0, got {self.min_labels}")
        if not 0.0 <= self.min_auc <= 1.0:
            raise ValueError(f"min_auc must be in [0, 1], got {self.min_auc}")
        if not (math.isfinite(self.max_log_loss) and self.max_log_loss > 0.0):
            raise ValueError(f"max_log_loss must be positive and finite, got {self.max_log_loss}")


@dataclass(frozen=True, slots=True)
class QualitySummary:
    """The trainer's verdict on its model, shipped in the snapshot's metadata."""

    n: int  #: labels scored prequentially
    roc_auc: float  #: rolling ROC AUC
    log_loss: float  #: rolling log loss
    in_drift: bool  #: a drift detection is recent

    @classmethod
    def of(cls, q: Quality) -> QualitySummary:
        return cls(n=q.n, roc_auc=q.roc_auc, log_loss=q.log_loss, in_drift=q.in_drift)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualitySummary:
        """Raises ``ValueError`` on a malformed summary."""
        n, drift = d.get("n"), d.get("in_drift")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"quality summary: bad n {n!r}")
        auc, loss = _finite(d, "roc_auc"), _finite(d, "log_loss")
        if not isinstance(drift, bool):
            raise ValueError(f"quality summary: bad in_drift {drift!r}")
        return cls(n=n, roc_auc=auc, log_loss=loss, in_drift=drift)


def _finite(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"quality summary: bad {key} {v!r}")
    return float(v)


class Scorer:
    """What a worker uses at a decision point: the installed model when the gate lets it decide,
    otherwise the rules, with the reason.

    The verdict is taken once per :meth:`install` (a worker's model only changes there), in this
    order: ``MODEL_COLD`` (nothing installed, or fewer than ``min_labels`` labels learnt), then
    ``MODEL_DRIFT`` (the detector fired recently: the most specific explanation), then
    ``MODEL_BELOW_FLOOR`` (rolling AUC < ``min_auc`` or log loss > ``max_log_loss``; a NaN
    fails too). Install a model that no longer learns (a worker's, loaded from a snapshot): the
    verdict and the model's cached version are not re-examined between installs.
    """

    __slots__ = ("_fallback", "_model", "_rules", "_summary", "gate")

    def __init__(self, gate: Gate, rules: Callable[[Mapping[str, float]], Risk]) -> None:
        self.gate = gate
        self._rules = rules
        self._model: RiskModel | None = None
        self._summary: QualitySummary | None = None
        self._fallback = MODEL_COLD

    def install(self, model: RiskModel, quality_summary: QualitySummary) -> None:
        """Serve ``model`` (a newly loaded snapshot) judged by ``quality_summary``."""
        self._model = model
        self._summary = quality_summary
        self._fallback = self._verdict(model, quality_summary)

    def install_snapshot(self, snap: Snapshot) -> None:
        """:meth:`install` the model and quality summary of a verified snapshot. A snapshot
        without a quality summary carries no evidence of quality: below the floor."""
        model = RiskModel.from_state(snap.model_state)
        summary = snap.meta.get("quality")
        if isinstance(summary, Mapping):
            self.install(model, QualitySummary.from_dict(summary))
        else:
            self.install(model, QualitySummary(n=0, roc_auc=0.0, log_loss=math.inf, in_drift=False))

    @property
    def model(self) -> RiskModel | None:
        return self._model

    @property
    def fallback_reason(self) -> str:
        """``""`` when the model decides, else the code the rules will carry."""
        return self._fallback

    def risk(self, x: Mapping[str, float]) -> Risk:
        model = self._model
        if self._fallback or model is None:
            r = self._rules(x)
            return dataclasses.replace(r, fallback_reason=self._fallback or MODEL_COLD)
        return Risk(model.score(x), "model", model.version, "", model.contributions(x))

    def _verdict(self, model: RiskModel, q: QualitySummary) -> str:
        g = self.gate
        if model.n_learned < g.min_labels or model.n_learned == 0:
            return MODEL_COLD
        if q.in_drift:
            return MODEL_DRIFT
        if not (q.roc_auc >= g.min_auc and q.log_loss <= g.max_log_loss):
            return MODEL_BELOW_FLOOR
        return ""


class Trainer:
    """The single trainer's pure logic, also driven by the offline replay.

    ``learn`` is prequential (score, judge, then learn) and idempotent per labels-topic offset:
    a label at or before ``labels_offset`` (replayed after a restart from the last snapshot) is
    skipped. ``labels_offset`` is one integer, so the labels topic has one partition (one
    trainer reads it in order).

    ``quality`` (what the gate reads) covers the examples the model learns: installments
    issued while the account was current. ``segments`` judges the same scores per segment
    (:data:`SEGMENTS`), the arrears-at-issue ones included, which are scored but never learnt;
    the snapshot carries their summaries (every worker exports them on ``/metrics``) and their
    state (a restarted trainer resumes them).
    """

    __slots__ = ("labels_offset", "model", "quality", "segments")

    def __init__(
        self, kind: str = "logistic", seed: int = 42, *, window: int = 1000, recovery: int = 500
    ) -> None:
        self.model = RiskModel(kind, seed)
        self.quality = Quality(window=window, recovery=recovery)
        self.segments = {s: Quality(window=window, recovery=recovery) for s in SEGMENTS}
        #: Offset of the last label learnt on the labels topic (-1: none).
        self.labels_offset = -1

    def learn(self, x: Mapping[str, float], y: int, offset: int, *,
              segment: str | None = None) -> bool:
        """Judge, then learn label ``y`` for feature snapshot ``x`` read at ``offset``.

        ``segment`` is the label's (:func:`label_segment` of ``x`` when ``None``). True when
        the model learnt; False when the offset was already consumed (nothing changes) or the
        example is an arrears-at-issue one (its score is judged in ``segments``, the offset
        advances, the model does not learn). A label other than 0/1, or an unknown segment,
        raises ``ValueError`` and changes nothing."""
        if offset <= self.labels_offset:
            return False
        if y not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {y!r}")
        seg = label_segment(x) if segment is None else segment
        if seg not in self.segments:
            raise ValueError(f"unknown label segment {seg!r}")
        p = self.model.score(x)
        self.segments[seg].update(p, y)
        self.labels_offset = offset
        if seg == "arrears":
            return False
        self.quality.update(p, y)
        self.model.learn(x, y)
        return True

    def summary(self) -> QualitySummary:
        return QualitySummary.of(self.quality)

    def segment_summaries(self) -> dict[str, dict[str, Any]]:
        """Each segment's quality summary; an undefined ROC AUC or log loss (no labels yet,
        or one class only) is ``None``: a gap, not a figure."""
        return {name: {"n": q.n, "roc_auc": q.roc_auc if q.auc_defined else None,
                       "log_loss": q.log_loss if q.n else None, "in_drift": q.in_drift}
                for name, q in self.segments.items()}

    def snapshot(self, key: bytes, created_ts: int) -> bytes:
        """A signed snapshot: the model, the quality summary workers gate on, the segments'
        summaries, and the quality states a restarted trainer resumes from."""
        meta = {
            "version": self.model.version,
            "n_learned": self.model.n_learned,
            "labels_offset": self.labels_offset,
            "created_ts": created_ts,
            "kind": self.model.kind,
            "quality": self.summary().to_dict(),
            "quality_state": self.quality.to_state(),
            "segments": self.segment_summaries(),
            "segments_state": {name: q.to_state() for name, q in self.segments.items()},
        }
        return sign_snapshot(self.model.to_state(), key=key, meta=meta)

    @classmethod
    def restore(cls, snap: Snapshot) -> Trainer:
        """The trainer that published ``snap`` (verify it first); learning resumes after
        ``snap.labels_offset``. A snapshot without quality state (or without a segment's)
        restarts that quality window."""
        model = RiskModel.from_state(snap.model_state)
        t = cls(model.kind, model.seed)
        t.model = model
        qstate = snap.meta.get("quality_state")
        if isinstance(qstate, Mapping):
            t.quality = Quality.from_state(qstate)
        sstates = snap.meta.get("segments_state")
        if isinstance(sstates, Mapping):
            for name, state in sstates.items():
                if name in t.segments and isinstance(state, Mapping):
                    t.segments[name] = Quality.from_state(state)
        t.labels_offset = snap.labels_offset
        return t
