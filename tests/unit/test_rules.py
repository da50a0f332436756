"""The rule score's conditional terms: a ratio over income counts only once income is known."""

from __future__ import annotations

import pytest

from policies.rules import neutral_features, rule_risk
from policies.spec import PolicyError, load_policy, parse_policy
from streams.settings import DEFAULT_POLICY


def test_debt_to_income_is_ignored_while_income_is_unknown() -> None:
    policy = load_policy(DEFAULT_POLICY)
    # A thin-file user with liabilities and no income: the features cap the ratio at 10.
    unknown = rule_risk(neutral_features(debt_to_income=10.0, income_monthly=0.0), policy)
    known = rule_risk(neutral_features(debt_to_income=10.0, income_monthly=500_000.0), policy)
    assert "debt_to_income" not in dict(unknown.contributions)
    assert dict(known.contributions)["debt_to_income"] > 0
    assert known.pd > unknown.pd


def test_requires_must_name_a_feature() -> None:
    text = DEFAULT_POLICY.read_text().replace('requires = "income_monthly"',
                                               'requires = "salary"')
    with pytest.raises(PolicyError) as exc:
        parse_policy(text)
    assert exc.value.key == "rules.weights.debt_to_income.requires"
