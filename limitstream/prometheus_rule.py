"""Generates ``deploy/k8s/prometheusrule.yaml`` from ``deploy/prometheus/alerts.yml``.

The alert and recording rules have one source, ``alerts.yml`` (loaded as is by the compose
stack's Prometheus and tested by ``promtool test rules``); on Kubernetes the Prometheus
Operator loads rules from a ``PrometheusRule`` resource, which is this file's groups wrapped
in that resource. Regenerate it after changing the rules::

    python -m limitstream.prometheus_rule \
        deploy/prometheus/alerts.yml deploy/k8s/prometheusrule.yaml

``tests/unit/test_deploy_prometheusrule.py`` fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `python -m limitstream.prometheus_rule
# deploy/prometheus/alerts.yml deploy/k8s/prometheusrule.yaml`: edit alerts.yml, then
# regenerate (a test keeps the two equal). The Prometheus Operator loads it into the
# Prometheus whose ruleSelector matches these labels (the ServiceMonitor's Prometheus).
"""


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    """The ``PrometheusRule`` resource holding the rule groups of ``alerts``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "limitstream",
            "labels": {
                "app.kubernetes.io/name": "limitstream",
                "app.kubernetes.io/component": "alerting",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the PromQL expressions) as literal blocks, as in the
    source, so the generated file reads like alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render(alerts_text: str) -> str:
    """The file's text for the rules file's text ``alerts_text``."""
    doc = prometheus_rule(yaml.safe_load(alerts_text))
    body: str = yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=100,
                          allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m limitstream.prometheus_rule ALERTS_YML PROMETHEUSRULE_YAML",
              file=sys.stderr)
        return 2
    source, target = (Path(a) for a in argv)
    target.write_text(render(source.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
