"""The online risk model: a narrow typed wrapper around a River pipeline.

``RiskModel`` *composes* a River pipeline (it never subclasses one) and exposes the one estimator
API the rest of limitstream uses: :meth:`~RiskModel.score` before :meth:`~RiskModel.learn`
(prequential), :meth:`~RiskModel.contributions` for the audit trail, a deterministic
:attr:`~RiskModel.version`, and an exact plain-data state (:meth:`~RiskModel.to_state` /
:meth:`~RiskModel.from_state`) so a snapshot can travel as JSON on a Kafka topic — no pickle.

The kind of model is a setting (:data:`KINDS`); every kind is a standardising scaler, a
winsoriser and a logistic regression, and differs in the optimiser:

* ``"logistic"``: plain SGD (constant learning rate) with a small L2 penalty;
* ``"logistic_adagrad"``: AdaGrad, whose per-feature step sizes shrink with the accumulated
  squared gradients (steadier weights once many labels have been seen).

Examples
--------
>>> m = RiskModel("logistic")
>>> m.version
'untrained'
>>> m.score({"late_count_12": 0.0})
0.5
>>> for i in range(200):
...     late = float(i % 4)
...     m.learn({"late_count_12": late, "utilization": 0.2}, int(late >= 2))
>>> m.score({"late_count_12": 3.0}) > 0.5 > m.score({"late_count_12": 0.0})
True
>>> m.contributions({"late_count_12": 3.0, "utilization": 0.2})[0][0]
'late_count_12'
>>> m.version.startswith("logistic-200-")
True
>>> RiskModel.from_state(m.to_state()).version == m.version
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from river import compose, linear_model, optim, preprocessing, utils

from streams.codec import MAX_AMOUNT

__all__ = ["KINDS", "LOGIT_CLIP", "STATE_FORMAT", "RiskModel", "state_version"]

#: Version of the plain-data layout produced by :meth:`RiskModel.to_state`.
STATE_FORMAT: Final = 1

#: Scores are ``sigmoid(clip(logit, -LOGIT_CLIP, LOGIT_CLIP))``: a PD is never exactly 0 or 1
#: (P in [3.1e-7, 1 - 3.1e-7]), so a per-example log loss is bounded by 15 nats and nothing
#: downstream takes the log of 0. River's own sigmoid returns exact 0/1 beyond ±30.
LOGIT_CLIP: Final = 15.0
_P_MIN: Final = 1.0 / (1.0 + math.exp(LOGIT_CLIP))
_P_MAX: Final = 1.0 - _P_MIN

#: Raw inputs are clipped to ±10^12, the codec's ``MAX_AMOUNT`` (minor units): Welford's update
#: squares deviations, and 10^24 is still far from float overflow, whereas a stray 1e300 would
#: turn a running variance into inf and every later score into NaN.
_MAX_ABS_INPUT: Final = float(MAX_AMOUNT)

#: Standardised values are winsorised to ±8 standard deviations. Credit features are heavy
#: tailed (max spend, balances); a feature that was almost constant so far has a tiny variance,
#: and one outlier would otherwise give a huge z, a huge gradient step and a wrecked weight.
_Z_CLIP: Final = 8.0


@dataclass(frozen=True, slots=True)
class _Kind:
    """Hyper-parameters of one model kind (what the ``version`` hash covers, with the state)."""

    optimizer: str  # "sgd" or "adagrad"
    lr: float  # optimiser learning rate (constant)
    l2: float  # L2 penalty on the weights (not the intercept)
    intercept_lr: float  # the intercept's own constant learning rate


_KINDS: Final[Mapping[str, _Kind]] = {
    # Chosen on the synthetic population of the tests (tests/unit/test_model_data.py, 3 seeds
    # x 4 000 labels, base rate ~13 %): prequential AUC over the second half 0.831 (SGD) and
    # 0.832 (AdaGrad) against 0.840 for an offline IRLS fit; SGD at lr 0.05 / 0.1 lost 0.04 /
    # 0.07 AUC to noisy weights. A faster intercept (0.05) finds the base rate in the first
    # few hundred labels. The L2 penalty is tiny: it only keeps collinear weights bounded.
    "logistic": _Kind(optimizer="sgd", lr=0.005, l2=1e-4, intercept_lr=0.05),
    "logistic_adagrad": _Kind(optimizer="adagrad", lr=0.05, l2=1e-4, intercept_lr=0.05),
}

#: The model kinds a deployment may choose from.
KINDS: Final[tuple[str, ...]] = tuple(_KINDS)


def _winsorise(x: dict[str, float]) -> dict[str, float]:
    """Clip standardised values to ±``_Z_CLIP`` (a stateless step of the pipeline)."""
    return {k: (_Z_CLIP if v > _Z_CLIP else -_Z_CLIP if v < -_Z_CLIP else v) for k, v in x.items()}


def _sanitise(x: Mapping[str, float]) -> dict[str, float]:
    """Drop non-finite values (treated as missing: imputed at the running mean, contributing
    nothing) and clip the others to ±``_MAX_ABS_INPUT``, so bad input can never poison state."""
    # Fast path: one comparison per value (NaN and ±inf fail it), no function calls.
    out = {k: v for k, v in x.items() if -_MAX_ABS_INPUT <= v <= _MAX_ABS_INPUT}
    if len(out) != len(x):
        m = _MAX_ABS_INPUT
        out = {k: (m if v > m else -m if v < -m else v) for k, v in x.items() if math.isfinite(v)}
    return out


def _build(kind: str) -> tuple[Any, Any, Any, Any, list[Callable[[dict[str, float]], Any]]]:
    """The River pipeline of ``kind``, its scaler, regression and optimiser, and the ordered
    ``transform_one`` of every step before the regression."""
    spec = _KINDS[kind]
    opt: Any = optim.SGD(spec.lr) if spec.optimizer == "sgd" else optim.AdaGrad(spec.lr)
    scaler = preprocessing.StandardScaler()
    clip = compose.FuncTransformer(_winsorise)
    reg = linear_model.LogisticRegression(optimizer=opt, l2=spec.l2, intercept_lr=spec.intercept_lr)
    pipe = scaler | clip | reg
    return pipe, scaler, reg, opt, [scaler.transform_one, clip.transform_one]


class RiskModel:
    """P(next installment goes overdue | features), learnt online from delayed labels.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    seed
        Kept in the state and the version hash; the current kinds are deterministic (zero
        initial weights, no sampling), the seed is there for variants that are not.
    """

    __slots__ = (
        "_opt",
        "_pipe",
        "_pre",
        "_reg",
        "_scaler",
        "_version",
        "kind",
        "n_learned",
        "seed",
    )

    def __init__(self, kind: str = "logistic", seed: int = 42) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.seed = seed
        #: Number of labelled examples learnt.
        self.n_learned = 0
        self._pipe, self._scaler, self._reg, self._opt, self._pre = _build(kind)
        self._version: str | None = "untrained"

    # -- the estimator API -------------------------------------------------------------------

    def score(self, x: Mapping[str, float]) -> float:
        """The probability of default for feature vector ``x``, in ``[3.1e-7, 1 - 3.1e-7]``.

        Pure: scoring never changes the model (nor its version).
        """
        proba = self._pipe.predict_proba_one(_sanitise(x))
        p = float(proba.get(True, 0.5))
        # Clipping p to [_P_MIN, _P_MAX] is clipping the logit to ±LOGIT_CLIP (monotone).
        return _P_MIN if p < _P_MIN else _P_MAX if p > _P_MAX else p

    def learn(self, x: Mapping[str, float], y: int) -> None:
        """Learn one labelled example: ``y`` is 1 when the installment went overdue, else 0."""
        if y not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {y!r}")
        self._pipe.learn_one(_sanitise(x), int(y))
        self.n_learned += 1
        self._version = None

    def contributions(self, x: Mapping[str, float], top: int = 5) -> tuple[tuple[str, float], ...]:
        """The features that pushed the logit most: ``weight_i * z_i`` (``z_i`` standardised and
        winsorised), sorted by absolute value, largest first, ties by name; zeros are left out."""
        z: Any = _sanitise(x)
        for transform in self._pre:
            z = transform(z)
        w = self._reg.weights
        pairs = [(k, w.get(k, 0.0) * v) for k, v in z.items()]
        pairs = [(k, c) for k, c in pairs if c != 0.0]
        pairs.sort(key=lambda kc: (-abs(kc[1]), kc[0]))
        return tuple(pairs[: max(top, 0)])

    @property
    def version(self) -> str:
        """``"untrained"``, or ``f"{kind}-{n_learned}-{sha256(state)[:12]}"``: deterministic,
        the same for a model and its restored copy, and new whenever the model learns."""
        if self._version is None:
            self._version = state_version(self.to_state())
        return self._version

    @property
    def weights(self) -> dict[str, float]:
        """A copy of the regression's weights (on standardised features)."""
        return {k: float(v) for k, v in self._reg.weights.items()}

    @property
    def intercept(self) -> float:
        return float(self._reg.intercept)

    def __repr__(self) -> str:
        return f"RiskModel({self.kind!r}, n_learned={self.n_learned}, version={self.version!r})"

    # -- plain-data state --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to score *and continue learning* identically, as JSON-able data.

        Dict orders are kept (they are River's insertion orders, which fix the order of float
        sums), so :meth:`from_state` rebuilds a bit-identical model.
        """
        counts = self._scaler.counts
        means = self._scaler.means
        variances = self._scaler.vars
        # Scoring an unseen feature inserts a zero into the scaler's defaultdicts; such entries
        # (count 0) equal the defaults, so they are left out and the state stays pure.
        names = [k for k, c in counts.items() if c > 0]
        opt: dict[str, Any] = {"n_iterations": int(self._opt.n_iterations)}
        if isinstance(self._opt, optim.AdaGrad):
            opt["g2"] = {k: float(v) for k, v in self._opt.g2.items()}
        return {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "seed": self.seed,
            "n_learned": self.n_learned,
            "scaler": {
                "counts": {k: int(counts[k]) for k in names},
                "means": {k: float(means[k]) for k in names},
                "vars": {k: float(variances[k]) for k in names},
            },
            "weights": self.weights,
            "intercept": self.intercept,
            "optimizer": opt,
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> RiskModel:
        """The model :meth:`to_state` described. Raises ``ValueError`` on any malformed state
        (wrong format, unknown kind, wrong types, non-finite numbers)."""
        if not isinstance(d, Mapping):
            raise ValueError("model state must be a mapping")
        if d.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported model state format {d.get('format')!r}")
        kind = d.get("kind")
        if not isinstance(kind, str) or kind not in _KINDS:
            raise ValueError(f"unknown model kind {kind!r}")
        m = cls(kind, seed=_int(d, "seed"))
        m.n_learned = _int(d, "n_learned", minimum=0)
        scaler = _mapping(d, "scaler")
        counts = _floats(scaler, "counts")
        means = _floats(scaler, "means")
        variances = _floats(scaler, "vars")
        if not (counts.keys() == means.keys() == variances.keys()):
            raise ValueError("scaler counts, means and vars must name the same features")
        if any(c < 1 or c != int(c) for c in counts.values()):
            raise ValueError("scaler counts must be positive integers")
        if any(v < 0 for v in variances.values()):
            raise ValueError("scaler variances must be non-negative")
        m._scaler.counts.update({k: int(c) for k, c in counts.items()})
        m._scaler.means.update(means)
        m._scaler.vars.update(variances)
        # River exposes the weights read-only (a copy); the VectorDict behind them is the one
        # private attribute touched here. Its exactness is pinned by the round-trip tests.
        m._reg._weights = utils.VectorDict(dict(_floats(d, "weights")))
        m._reg.intercept = _float(d, "intercept")
        opt = _mapping(d, "optimizer")
        m._opt.n_iterations = _int(opt, "n_iterations", minimum=0)
        if isinstance(m._opt, optim.AdaGrad):
            g2 = _floats(opt, "g2")
            if any(v < 0 for v in g2.values()):
                raise ValueError("AdaGrad's squared gradients must be non-negative")
            m._opt.g2.update(g2)
        m._version = "untrained" if m.n_learned == 0 else None
        return m


def state_version(state: Mapping[str, Any]) -> str:
    """The version of the model ``state`` describes (what :attr:`RiskModel.version` returns):
    ``"untrained"``, or kind, labels learnt and the first 12 hex digits of the SHA-256 of the
    state serialised with sorted keys (so the hash does not depend on dict order)."""
    n = state.get("n_learned")
    if n == 0:
        return "untrained"
    digest = hashlib.sha256(orjson.dumps(dict(state), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{state.get('kind')}-{n}-{digest[:12]}"


# -- validation helpers for from_state -------------------------------------------------------


def _mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = d.get(key)
    if not isinstance(v, Mapping):
        raise ValueError(f"model state: {key!r} must be a mapping")
    return v


def _float(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"model state: {key!r} must be a finite number, got {v!r}")
    return float(v)


def _int(d: Mapping[str, Any], key: str, minimum: int | None = None) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"model state: {key!r} must be an integer{bound}, got {v!r}")
    return v


def _floats(d: Mapping[str, Any], key: str) -> dict[str, float]:
    m = _mapping(d, key)
    out: dict[str, float] = {}
    for k, v in m.items():
        if not isinstance(k, str):
            raise ValueError(f"model state: {key!r} keys must be strings")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"model state: {key}[{k!r}] must be a finite number, got {v!r}")
        out[k] = float(v)
    return out
