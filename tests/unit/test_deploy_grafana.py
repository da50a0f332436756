"""Grafana provisioning and dashboard, and the series every PromQL expression names.

A panel or an alert that names a series nobody exports shows "no data" forever, silently.
Every metric name in the dashboard and in alerts.yml must be a series of the
:class:`agents.metrics.Metrics` bundle or of Faust's sensor, both collected from a fresh
registry (Prometheus's own ``up`` is allowed in alerts only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.faust_monitor import install_faust_monitor
from agents.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "limitstream.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "limitstream.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

#: Series Prometheus itself writes for every target; used to see a worker that is down.
PROMETHEUS_SYNTHETIC = frozenset({"up"})


def recorded_series() -> frozenset[str]:
    """The series the recording rules of alerts.yml write."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return frozenset(r["record"] for g in groups for r in g["rules"] if "record" in r)

#: Panels the on-call needs, by title (RUNBOOK.md refers to them by these names).
REQUIRED_PANELS = (
    "Throughput by topic",
    "Consumer lag",
    "Decision latency p50 / p99",
    "Processing time per event (p99 by topic)",
    "Dead letters by reason",
    "Duplicates, re-keyed and late events",
    "Agent errors by stage",
    "Workers ready",
    "Decision mix by action",
    "Status population",
    "Total limit extended",
    "Fallback decisions by reason",
    "Model quality (ROC AUC, log loss)",
    "Model version served",
    "Drift and snapshots",
    "Delayed labels",
)

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    }
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def exported_series() -> frozenset[str]:
    """Every sample name the app exports: the bundle plus Faust's sensor, on a fresh registry."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    install_faust_monitor(faust.App("grafana-test", broker="kafka://127.0.0.1:1"), registry)
    names: set[str] = set()
    for family in registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels excluded)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    s = re.sub(r"'(?:\\.|[^'\\])*'", "''", s)
    s = re.sub(r"#[^\n]*", "", s)  # comments
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s
    )  # label lists
    s = re.sub(r"\boffset\s+-?[0-9a-zA-Z]+", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = match.group(0)
        if s[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def test_metric_names_parser() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, topic)"
        ' (rate(a_bucket{topic=~"$t"}[$__rate_interval])))'
        " / on() group_left sum without (x) (b_total offset 1d15m) > 1e-5 and c # comment d\n"
        'or max(e{le="0.05"}) unless bool f'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "e", "f"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboard_is_valid_json_with_unique_ids_and_a_sane_layout() -> None:
    data = dashboard()
    assert data["uid"] == "limitstream"
    assert data["title"]
    assert isinstance(data["schemaVersion"], int)
    ids = [p["id"] for p in panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(data["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


#: Italic spans of RUNBOOK.md that are not panel titles.
RUNBOOK_ITALICS_NOT_PANELS = frozenset({"limitstream", "Worker", "Before you start"})


def runbook_italics() -> set[str]:
    text = (ROOT / "deploy" / "RUNBOOK.md").read_text()
    text = re.sub(r"^(\s*)\* ", r"\1", text, flags=re.MULTILINE)  # list bullets
    text = re.sub(r"`[^`]*`", "", text)  # code spans
    return set(re.findall(r"(?<!\*)\*([^*\s](?:[^*\n]*[^*\s])?)\*(?!\*)", text))


def test_dashboard_has_the_panels_the_runbook_names() -> None:
    titles = {p["title"] for p in panels(dashboard()["panels"])}
    assert set(REQUIRED_PANELS) - titles == set()
    # The runbook names panels in italics, by their title or its start.
    italics = runbook_italics()
    assert len(italics) > 10
    for name in italics - RUNBOOK_ITALICS_NOT_PANELS:
        assert any(title.startswith(name) for title in titles), f"RUNBOOK names no panel *{name}*"


def test_every_dashboard_expression_names_exported_series() -> None:
    exported = exported_series() | recorded_series()
    seen: set[str] = set()
    for title, expr in dashboard_expressions():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{title}: unknown series {sorted(unknown)} in {expr!r}"
        seen |= names
    # The dashboard shows every series of the bundle (at least one sample name of each), and
    # the process collectors' memory and CPU.
    registry = CollectorRegistry()
    Metrics.create(registry)
    for family in registry.collect():
        if not family.name.startswith("limitstream_"):
            continue  # prometheus-client's standard process/GC/platform collectors
        own = {family.name + suffix for suffix in _SUFFIXES[family.type]}
        assert own & seen, f"{family.name} is on no panel"
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= seen
    assert recorded_series() & seen, "no SLO panel"


def test_dashboard_variables_query_exported_series() -> None:
    exported = exported_series()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", text)
        assert match, text
        assert match.group(1) in exported, text


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(rule, id=f"{rule.get('alert') or rule['record']}-{i}")
        for i, rule in enumerate(
            r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
        )
    ],
)
def test_every_rule_expression_names_exported_or_recorded_series(rule: dict[str, Any]) -> None:
    name = rule.get("alert") or rule["record"]
    names = metric_names(rule["expr"])
    # absent(up{job="limitstream"}) is about the targets themselves.
    if name != "LimitstreamTargetAbsent":
        assert names - PROMETHEUS_SYNTHETIC, f"{name}: selects no limitstream series"
    unknown = names - exported_series() - PROMETHEUS_SYNTHETIC - recorded_series()
    assert not unknown, f"{name}: unknown series {sorted(unknown)}"
    # A recording rule reads the workers' series, never another rule's.
    if "record" in rule:
        assert not names & recorded_series(), name


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load(DATASOURCE.read_text())
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service name and port
    assert source["isDefault"] is True


def test_dashboard_provisioning_points_at_the_mounted_dashboards() -> None:
    doc = yaml.safe_load(PROVIDER.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(
        m.split(":")[0] == "./deploy/grafana/dashboards" and m.split(":")[1] == path for m in mounts
    ), f"grafana must mount deploy/grafana/dashboards at {path}"
