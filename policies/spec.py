"""The limit policy: a declarative TOML file, validated at load, versioned by its hash.

A :class:`Policy` is a tree of frozen dataclasses, one per section of the file. Every key is
required (the file states the whole policy, so its hash pins every number a decision used);
unknown keys, wrong types (``true`` is not a number), out-of-range values, impossible ladders
and thresholds without a hysteresis gap are :class:`PolicyError` naming the key.

Money is integer minor units, durations whole days, percentages integers, probabilities and
ratios floats.

Examples
--------
>>> from streams.settings import DEFAULT_POLICY
>>> policy = load_policy(DEFAULT_POLICY)
>>> policy.reinstate.ladder
(10, 25, 50, 100)
>>> len(policy.version)
64
>>> text = DEFAULT_POLICY.read_text(encoding="utf-8")
>>> bad = text.replace("max_limit = 5_000_000", "max_limit = 1")
>>> try:
...     parse_policy(bad)
... except PolicyError as e:
...     print(e.key)
limits.max_limit
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from features.names import FEATURE_NAMES

# The input codec's bound on money: larger amounts are unit errors, not credit lines.
from streams.codec import MAX_AMOUNT


class PolicyError(ValueError):
    """An invalid policy file; ``key`` is the dotted key at fault (``""`` for the whole file)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def _f(**bounds: Any) -> Any:
    """A required field with its bounds (``ge``/``gt``/``le``/``lt``) as metadata."""
    return dataclasses.field(metadata=bounds)


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    default_limit: int = _f(ge=0, le=MAX_AMOUNT)  #: a user first seen without ``opened``
    min_limit: int = _f(ge=0, le=MAX_AMOUNT)  #: floor of automatic cuts
    max_limit: int = _f(ge=0, le=MAX_AMOUNT)  #: absolute cap
    income_multiple_pct: int = _f(gt=0, le=10_000)  #: limit <= income x pct / 100
    rounding: int = _f(gt=0, le=MAX_AMOUNT)  #: automatic limits are multiples of this


@dataclass(frozen=True, slots=True)
class IncreaseSpec:
    max_step_pct: int = _f(gt=0, le=100)
    max_step_abs: int = _f(gt=0, le=MAX_AMOUNT)
    min_ontime_12: int = _f(ge=0, le=12)
    max_late_12: int = _f(ge=0, le=12)
    late_lookback_days: int = _f(ge=0, le=3650)  #: no raise this long after a late repayment
    min_utilization: float = _f(ge=0.0, le=2.0)
    max_pd: float = _f(gt=0.0, lt=1.0)
    max_dti: float = _f(gt=0.0, le=10.0)
    min_inflow_trend: float = _f(ge=0.0, le=10.0)
    require_income: bool = _f()
    cooldown_days: int = _f(ge=0, le=3650)
    min_days_since_open: int = _f(ge=0, le=3650)
    max_refund_ratio: float = _f(gt=0.0, le=10.0)  #: refunds this share of spend: not demand


@dataclass(frozen=True, slots=True)
class DecreaseSpec:
    pd_cut: float = _f(gt=0.0, lt=1.0)
    step_pct: int = _f(gt=0, le=100)
    income_drop_trend: float = _f(ge=0.0, le=10.0)
    #: Inflow below this share of the previous months' is a collapse: it closes the open-to-buy
    #: on its own; between it and ``income_drop_trend`` a decline needs a second sign of
    #: distress (a lateness, arrears, cash advances), else it cuts one step.
    income_collapse_trend: float = _f(ge=0.0, le=10.0)
    max_dti: float = _f(gt=0.0, le=10.0)
    utilization_spike: float = _f(gt=0.0, le=2.0)
    cash_advance_share: float = _f(gt=0.0, le=1.0)
    cash_advance_utilization: float = _f(gt=0.0, le=2.0)
    distress_to_balance: bool = _f()  #: a distress cut closes the open-to-buy
    cooldown_days: int = _f(ge=0, le=3650)
    raise_cooldown_days: int = _f(ge=0, le=3650)


@dataclass(frozen=True, slots=True)
class SuspendSpec:
    dpd_days: int = _f(ge=1, le=3650)
    missed_count: int = _f(ge=1, le=12)
    pd_suspend: float = _f(gt=0.0, lt=1.0)


@dataclass(frozen=True, slots=True)
class ReinstateSpec:
    min_suspension_days: int = _f(ge=0, le=3650)
    max_pd: float = _f(gt=0.0, lt=1.0)
    ladder: tuple[int, ...] = _f(ge=1, le=100)
    observation_days: tuple[int, ...] = _f(ge=1, le=3650)
    min_ontime_in_stage: int = _f(ge=0, le=12)
    max_utilization: float = _f(gt=0.0, le=2.0)

    @property
    def stages(self) -> int:
        """Number of PROBATION stages: every rung of the ladder but the last (100 % is ACTIVE)."""
        return len(self.ladder) - 1


@dataclass(frozen=True, slots=True)
class ReviewSpec:
    interval_days: int = _f(ge=1, le=3650)
    cash_advance: bool = _f()  #: every cash advance is a decision point
    utilization_jump: float = _f(gt=0.0, le=10.0)  #: a spend crossing this utilization is one


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    trigger: float = _f(gt=0.0, le=1.0)


@dataclass(frozen=True, slots=True)
class HoldSpec:
    """When the line is held (HOLD_FOR_REVIEW: available credit 0, the limit kept)."""

    anomaly_single: float = _f(gt=0.0, le=1.0)  #: one transaction scoring this much
    burst_score: float = _f(gt=0.0, le=100.0)  #: the last hour's anomaly scores summing to this
    day_spend_share: float = _f(gt=0.0, le=10.0)  #: 24 h spend reaching this share of the limit
    day_spend_velocity: float = _f(ge=0.0, le=30.0)  #: ... at this multiple of the daily rate
    #: ... spread over at least this many spends in the 24 hours (one or two big-ticket
    #: purchases are judged by their own anomaly score, not as a line drawn down).
    day_spend_min_count: int = _f(ge=1, le=10_000)
    #: An account opened less than this long ago is held at ``new_account_day_spend_share``:
    #: it has no history to judge a big day against (bust-out: a new line drawn in a day or two).
    new_account_days: int = _f(ge=0, le=3650)
    new_account_day_spend_share: float = _f(gt=0.0, le=10.0)
    review_days: int = _f(ge=1, le=3650)  #: an anomaly hold ends after this unless released
    arrears_dpd: int = _f(ge=1, le=3650)  #: an arrears this many days old holds until cured


@dataclass(frozen=True, slots=True)
class GuardrailsSpec:
    """Bounds on what the risk score may do on its own (adverse-action guardrails)."""

    #: Cold start: a score-driven cut needs this many resolved installments.
    score_cut_min_installments: int = _f(ge=0, le=12)
    #: Features a customer cannot act on: never the main reason of an adverse action.
    non_actionable: tuple[str, ...] = _f()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    min_labels: int = _f(ge=1, le=10**9)
    min_auc: float = _f(gt=0.5, le=1.0)
    max_log_loss: float = _f(gt=0.0, le=10.0)
    label_dpd: int = _f(ge=1, le=3650)
    label_horizon_days: int = _f(ge=1, le=3650)
    thin_file_installments: int = _f(ge=0, le=12)  #: fewer resolved: the thin-file segment


@dataclass(frozen=True, slots=True)
class RuleWeight:
    """One term of the rule score: ``weight x (min(max(x, 0), cap) - reference)`` log-odds."""

    feature: str
    weight: float
    reference: float  #: the value that contributes nothing (a typical good customer)
    cap: float  #: values above count as this, so one extreme feature cannot decide alone
    #: A feature that must be positive for this term to count (e.g. a ratio over income
    #: means nothing while the income is unknown); "" = always counts.
    requires: str = ""


@dataclass(frozen=True, slots=True)
class RulesSpec:
    intercept: float  #: log-odds of a customer at every reference value
    weights: tuple[RuleWeight, ...]


@dataclass(frozen=True, slots=True)
class OperatorsSpec:
    allowed: tuple[str, ...] = _f()
    allow_override_above_max: bool = _f()


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy; ``version`` is the sha256 hex of the file's bytes."""

    version: str
    limits: LimitsSpec
    increase: IncreaseSpec
    decrease: DecreaseSpec
    suspend: SuspendSpec
    reinstate: ReinstateSpec
    review: ReviewSpec
    anomaly: AnomalySpec
    hold: HoldSpec
    guardrails: GuardrailsSpec
    model: ModelSpec
    rules: RulesSpec
    operators: OperatorsSpec


_SECTIONS: Final[Mapping[str, type]] = {
    "limits": LimitsSpec,
    "increase": IncreaseSpec,
    "decrease": DecreaseSpec,
    "suspend": SuspendSpec,
    "reinstate": ReinstateSpec,
    "review": ReviewSpec,
    "anomaly": AnomalySpec,
    "hold": HoldSpec,
    "guardrails": GuardrailsSpec,
    "model": ModelSpec,
    "rules": RulesSpec,
    "operators": OperatorsSpec,
}


def _type_name(v: object) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _bounded(key: str, v: float, meta: Mapping[str, Any]) -> None:
    if "ge" in meta and not v >= meta["ge"]:
        raise PolicyError(key, f"must be >= {meta['ge']}, got {v}")
    if "gt" in meta and not v > meta["gt"]:
        raise PolicyError(key, f"must be > {meta['gt']}, got {v}")
    if "le" in meta and not v <= meta["le"]:
        raise PolicyError(key, f"must be <= {meta['le']}, got {v}")
    if "lt" in meta and not v < meta["lt"]:
        raise PolicyError(key, f"must be < {meta['lt']}, got {v}")


def _int(key: str, v: object, meta: Mapping[str, Any]) -> int:
    # bool is an int subclass in Python: ``true`` is never a count or an amount.
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(key, f"must be an integer, got {_type_name(v)}")
    _bounded(key, v, meta)
    return v


def _float(key: str, v: object, meta: Mapping[str, Any]) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PolicyError(key, f"must be a number, got {_type_name(v)}")
    x = float(v)
    if not math.isfinite(x):  # TOML allows inf and nan
        raise PolicyError(key, "must be finite")
    _bounded(key, x, meta)
    return x


def _value(key: str, tp: Any, v: object, meta: Mapping[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(v, bool):
            raise PolicyError(key, f"must be a boolean, got {_type_name(v)}")
        return v
    if tp is int:
        return _int(key, v, meta)
    if tp is float:
        return _float(key, v, meta)
    if tp is str:
        if not isinstance(v, str) or not v:
            raise PolicyError(key, f"must be a non-empty string, got {_type_name(v)}")
        return v
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(v, list):
            raise PolicyError(key, f"must be an array, got {_type_name(v)}")
        return tuple(_value(f"{key}[{i}]", item, x, meta) for i, x in enumerate(v))
    raise TypeError(f"unsupported policy field type {tp!r}")  # a bug here, not in the file


def _table(key: str, v: object) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise PolicyError(key, f"must be a table, got {_type_name(v)}")
    return v


def _section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            raise PolicyError(f"{name}.{k}", f"unknown key (known: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for fname, f in fields.items():
        key = f"{name}.{fname}"
        if fname not in raw:
            raise PolicyError(key, "missing")
        values[fname] = _value(key, hints[fname], raw[fname], f.metadata)
    return cls(**values)


def _rules(raw: Mapping[str, Any]) -> RulesSpec:
    for k in raw:
        if k not in ("intercept", "weights"):
            raise PolicyError(f"rules.{k}", "unknown key (known: intercept, weights)")
    for k in ("intercept", "weights"):
        if k not in raw:
            raise PolicyError(f"rules.{k}", "missing")
    intercept = _float("rules.intercept", raw["intercept"], {"ge": -30.0, "le": 30.0})
    table = _table("rules.weights", raw["weights"])
    if not table:
        raise PolicyError("rules.weights", "must name at least one feature")
    weights = []
    for feature, spec in table.items():
        key = f"rules.weights.{feature}"
        if feature not in FEATURE_NAMES:
            raise PolicyError(key, "unknown feature (see features/names.py)")
        spec = _table(key, spec)
        for k in spec:
            if k not in ("weight", "reference", "cap", "requires"):
                raise PolicyError(f"{key}.{k}",
                                  "unknown key (known: weight, reference, cap, requires)")
        requires = spec.get("requires", "")
        if not isinstance(requires, str) or (requires and requires not in FEATURE_NAMES):
            raise PolicyError(f"{key}.requires", "must name a feature (see features/names.py)")
        for k in ("weight", "reference", "cap"):
            if k not in spec:
                raise PolicyError(f"{key}.{k}", "missing")
        cap = _float(f"{key}.cap", spec["cap"], {"gt": 0.0})
        weights.append(RuleWeight(
            feature,
            _float(f"{key}.weight", spec["weight"], {"ge": -100.0, "le": 100.0}),
            _float(f"{key}.reference", spec["reference"], {"ge": 0.0, "le": cap}),
            cap,
            requires,
        ))
    # The file's order is kept: it is the order the rules are documented in.
    return RulesSpec(intercept, tuple(weights))


def _need(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise PolicyError(key, message)


def _validate(p: Policy) -> None:
    """Relations between keys: bounds that nest, ladders that climb, hysteresis gaps."""
    lim, inc, dec, sus, rei = p.limits, p.increase, p.decrease, p.suspend, p.reinstate
    _need(lim.max_limit >= lim.min_limit, "limits.max_limit", "must be >= limits.min_limit")
    _need(lim.min_limit <= lim.default_limit <= lim.max_limit, "limits.default_limit",
          "must be between limits.min_limit and limits.max_limit")
    _need(lim.rounding <= max(lim.max_limit, 1), "limits.rounding",
          "must be <= limits.max_limit")
    # Hysteresis: the score that allows a raise (or a reinstatement) must be clearly below the
    # one that cuts (or suspends), so a user hovering near one threshold does not flap.
    _need(dec.pd_cut > inc.max_pd, "decrease.pd_cut",
          "must be > increase.max_pd (hysteresis gap between raise and cut)")
    _need(sus.pd_suspend > dec.pd_cut, "suspend.pd_suspend", "must be > decrease.pd_cut")
    _need(sus.pd_suspend > rei.max_pd, "reinstate.max_pd",
          "must be < suspend.pd_suspend (hysteresis gap between reinstate and relapse)")
    _need(dec.max_dti > inc.max_dti, "decrease.max_dti",
          "must be > increase.max_dti (hysteresis gap)")
    _need(inc.min_inflow_trend > dec.income_drop_trend, "increase.min_inflow_trend",
          "must be > decrease.income_drop_trend (hysteresis gap)")
    _need(dec.income_collapse_trend <= dec.income_drop_trend, "decrease.income_collapse_trend",
          "must be <= decrease.income_drop_trend")
    _need(p.anomaly.trigger <= p.hold.anomaly_single, "anomaly.trigger",
          "must be <= hold.anomaly_single (else an anomaly hold could never be evaluated)")
    _need(p.hold.arrears_dpd < sus.dpd_days, "hold.arrears_dpd",
          "must be < suspend.dpd_days (the hold comes before the suspension)")
    for i, name in enumerate(p.guardrails.non_actionable):
        _need(name in FEATURE_NAMES, f"guardrails.non_actionable[{i}]",
              "unknown feature (see features/names.py)")
    _need(p.model.label_dpd <= p.model.label_horizon_days, "model.label_dpd",
          "must be <= model.label_horizon_days (else no installment could be labelled bad)")
    _need(dec.raise_cooldown_days >= inc.cooldown_days, "decrease.raise_cooldown_days",
          "must be >= increase.cooldown_days (a cut holds raises back at least as long as a "
          "raise does)")
    _need(len(rei.ladder) >= 2, "reinstate.ladder",
          "needs at least two rungs (a probation stage and 100)")
    for i in range(1, len(rei.ladder)):
        _need(rei.ladder[i] > rei.ladder[i - 1], f"reinstate.ladder[{i}]",
              "must be strictly greater than the rung before")
    _need(rei.ladder[-1] == 100, f"reinstate.ladder[{len(rei.ladder) - 1}]",
          "the last rung must be 100 (full pre-suspension limit)")
    _need(len(rei.observation_days) == rei.stages, "reinstate.observation_days",
          f"needs one entry per probation stage ({rei.stages}: every ladder rung but the last)")
    ops = p.operators.allowed
    _need(len(set(ops)) == len(ops), "operators.allowed", "has duplicates")


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy from TOML text; the version is the sha256 of its UTF-8.

    Examples
    --------
    >>> try:
    ...     parse_policy("[limits]\\nrounding = true\\n")
    ... except PolicyError as e:
    ...     print(e)
    limits.default_limit: missing
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("", f"not valid TOML: {exc}") from None
    for k in raw:
        if k not in _SECTIONS:
            raise PolicyError(k, f"unknown section (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name not in raw:
            raise PolicyError(name, "missing section")
        table = _table(name, raw[name])
        sections[name] = _rules(table) if cls is RulesSpec else _section(name, cls, table)
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    policy = Policy(version=version, **sections)
    _validate(policy)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (the only I/O of the policy core).

    Examples
    --------
    >>> from streams.settings import DEFAULT_POLICY
    >>> load_policy(DEFAULT_POLICY).limits.rounding
    100
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError("", f"not UTF-8: {exc}") from None
    policy = parse_policy(text)
    # parse_policy hashes the decoded text's UTF-8, which is these exact bytes (decoding was
    # strict), so the version is the hash of the file as stored.
    return policy
