"""The engine a worker runs, built from a policy and the settings — the same one the replay,
the backtest and the tests build, so that they give the same outputs."""

from __future__ import annotations

from features import FeatureConfig
from policies.engine import Engine
from policies.rules import rule_risk
from policies.scorer import Gate, Scorer
from policies.spec import Policy
from streams.settings import Settings


def gate_of(policy: Policy) -> Gate:
    """The model-quality gate the policy declares."""
    m = policy.model
    return Gate(min_labels=m.min_labels, min_auc=m.min_auc, max_log_loss=m.max_log_loss)


def scorer_for(policy: Policy) -> Scorer:
    """A scorer that falls back to the policy's rule score."""
    return Scorer(gate_of(policy), lambda x: rule_risk(x, policy))


def feature_config(settings: Settings) -> FeatureConfig:
    return FeatureConfig(home_country=settings.home_country,
                         utc_offset_minutes=settings.utc_offset_minutes)


def engine_for(policy: Policy, settings: Settings) -> tuple[Engine, Scorer]:
    """The engine a worker runs — and the replay, to give the same outputs — with its scorer
    (which the snapshot follower or the in-process learning updates)."""
    scorer = scorer_for(policy)
    return Engine(policy, feature_config(settings), scorer.risk, settings.currency), scorer
