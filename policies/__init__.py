"""limitstream: policies — the decision core.

The limit policy (:mod:`policies.spec`, :mod:`policies.decide`), the account it governs
(:mod:`policies.account`), the transparent rule score (:mod:`policies.rules`) and the reason
codes (:mod:`policies.reasons`). Pure and deterministic: no Faust, no clock, no I/O but
reading the policy file.

Note: ``policies.decide`` here is the function; the module is ``sys.modules["policies.decide"]``
(``from policies.decide import ...`` works as usual).
"""

from policies.account import Account, Status, new_account
from policies.check import check_file
from policies.decide import (
    Action,
    CommandRejected,
    Decision,
    Observation,
    decide,
    is_decision_point,
)
from policies.reasons import REGISTRY, ReasonCode, customer_text, officer_text
from policies.risk import Risk
from policies.rules import NEUTRAL_FEATURES, neutral_features, rule_risk
from policies.spec import Policy, PolicyError, load_policy, parse_policy

__all__ = [
    "NEUTRAL_FEATURES",
    "REGISTRY",
    "Account",
    "Action",
    "CommandRejected",
    "Decision",
    "Observation",
    "Policy",
    "PolicyError",
    "ReasonCode",
    "Risk",
    "Status",
    "check_file",
    "customer_text",
    "decide",
    "is_decision_point",
    "load_policy",
    "neutral_features",
    "new_account",
    "officer_text",
    "parse_policy",
    "rule_risk",
]
