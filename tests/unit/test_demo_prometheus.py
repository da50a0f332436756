"""`limitstream demo` prints a Prometheus command line that works for its own worker."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from limitstream.demo import ALERT_RULES, prometheus_command
from streams.settings import Settings

pytestmark = pytest.mark.promtool


def test_the_printed_command_scrapes_the_demo_worker_with_the_alert_rules(tmp_path: Path) -> None:
    settings = Settings.from_env({"LIMITSTREAM_WEB_PORT": "16123",
                                  "LIMITSTREAM_DATA_DIR": str(tmp_path / "data")})
    argv = shlex.split(prometheus_command(settings))
    assert argv[0] == "prometheus"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])
    assert flags["web.listen-address"] == "127.0.0.1:9090"
    config = Path(flags["config.file"])
    doc = yaml.safe_load(config.read_text())
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "limitstream"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:16123"]}]
    assert doc["rule_files"] == [str(ALERT_RULES)]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make promtool`", pytrace=False)
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout + check.stderr


def test_without_the_checkout_s_rules_the_config_has_none(tmp_path: Path) -> None:
    settings = Settings.from_env({"LIMITSTREAM_DATA_DIR": str(tmp_path)})
    command = prometheus_command(settings, rules=tmp_path / "absent.yml")
    config = Path(dict(a.split("=", 1) for a in shlex.split(command)[1:])["--config.file"])
    doc = yaml.safe_load(config.read_text())
    assert "rule_files" not in doc
    assert doc["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:6066"]}]
