"""Alerting rules: valid for Prometheus, unit-tested with promtool, each with its runbook.

promtool comes from Debian's ``prometheus`` package (``make promtool`` installs it when
missing). These tests fail, never skip, without it: alerts that were never evaluated are worse
than no alerts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
#: promtool's test files; the day-long cases are evaluated at coarser steps in their own file.
ALERTS_TESTS = (PROMETHEUS / "alerts_test.yml", PROMETHEUS / "alerts_daily_test.yml")
CONFIG = PROMETHEUS / "prometheus.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

pytestmark = pytest.mark.promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make promtool` (it installs Debian's `prometheus` "
            "package, which provides promtool and starts no service), or "
            "`apt-get install -y prometheus`.",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    # Also checks that the rule_files of prometheus.yml resolve and load.
    result = run_promtool("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_the_local_config_of_the_readme() -> None:
    # deploy/prometheus/local.yml: the README's "run the monitoring locally" configuration.
    result = run_promtool("check", "config", "local.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed: run `make promtool` (it installs Debian's "
                    "`prometheus-alertmanager` package)", pytrace=False)
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_route_pages_critical_alerts_and_tickets_the_rest() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed: run `make promtool`", pytrace=False)

    def receiver(*labels: str) -> str:
        result = subprocess.run([amtool, "config", "routes", "test",
                                 f"--config.file={ALERTMANAGER}", *labels],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    for rule in alert_rules():
        labels = [f"alertname={rule['alert']}",
                  *(f"{k}={v}" for k, v in rule["labels"].items())]
        expected = "oncall" if rule["labels"]["severity"] == "critical" else "tickets"
        assert receiver(*labels) == expected, rule["alert"]


def promtool_groups() -> list[dict[str, Any]]:
    """Every test group of the promtool test files, each file checked to test alerts.yml."""
    groups: list[dict[str, Any]] = []
    for path in ALERTS_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == [ALERTS.name], path.name
        groups += doc["tests"]
    return groups


def test_promtool_test_rules() -> None:
    result = run_promtool("test", "rules", *(f.name for f in ALERTS_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(ALERTS_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for group in promtool_groups():
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_every_recording_rule_has_a_value_test() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    records = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    assert records, "the SLO recording rules"
    tested = " ".join(case["expr"] for group in promtool_groups()
                      for case in group.get("promql_expr_test", []))
    untested = {name for name in records if not re.search(rf"{re.escape(name)}\b", tested)}
    assert not untested, "recording rules whose value no promql_expr_test checks"


def test_every_alert_is_documented_and_links_its_runbook_section() -> None:
    headings = {
        github_anchor(line[3:]): line[3:].strip()
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alert_rules():
        name = rule["alert"]
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "deploy/RUNBOOK.md", name
        assert anchor in headings, f"{name}: no section #{anchor} in RUNBOOK.md"
        assert headings[anchor] == name, name


def test_every_runbook_section_says_what_it_means_how_to_confirm_and_what_to_do() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    sections = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]
    documented = {}
    for section in sections:
        title, _, body = section.partition("\n")
        documented[title.strip()] = body
    for name in names:
        body = documented[name]
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in body, f"{name}: section lacks {part}"
