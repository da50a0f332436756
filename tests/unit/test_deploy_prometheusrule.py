"""deploy/k8s/prometheusrule.yaml is deploy/prometheus/alerts.yml, wrapped for the Prometheus
Operator: one source of rules for compose and Kubernetes."""

from __future__ import annotations

from pathlib import Path

import yaml

from limitstream.prometheus_rule import render

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"


def test_the_prometheusrule_holds_exactly_the_rules_of_alerts_yml() -> None:
    rule = yaml.safe_load(RULE.read_text())
    alerts = yaml.safe_load(ALERTS.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert "namespace" not in rule["metadata"]
    assert rule["spec"]["groups"] == alerts["groups"]


def test_the_file_is_what_the_generator_writes() -> None:
    # Regenerate with: python -m limitstream.prometheus_rule deploy/prometheus/alerts.yml
    # deploy/k8s/prometheusrule.yaml
    assert RULE.read_text() == render(ALERTS.read_text())


def test_the_comparison_sees_a_changed_rule() -> None:
    alerts = yaml.safe_load(ALERTS.read_text())
    alerts["groups"][0]["rules"][0]["for"] = "1s"
    assert yaml.safe_load(render(yaml.safe_dump(alerts)))["spec"]["groups"] != yaml.safe_load(
        RULE.read_text())["spec"]["groups"]


def test_the_kustomization_deploys_it() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    assert RULE.name in kustomization["resources"]
