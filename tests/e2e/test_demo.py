"""`limitstream demo` in its non-interactive mode: starts its own broker and worker, shows
decisions as they happen, and stops cleanly, leaving nothing running."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import free_port

pytestmark = pytest.mark.broker


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_shows_decisions_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMITSTREAM_")}
    env["LIMITSTREAM_DATA_DIR"] = str(tmp_path / "data")
    env["LIMITSTREAM_WEB_PORT"] = str(port := free_port())  # the demo honours it
    done = subprocess.run(
        [sys.executable, "-m", "limitstream", "demo", "--plain", "--seconds", "20",
         "--users", "60"],
        env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "demo stopped: worker and broker are down" in out
    decisions = [line for line in done.stdout.splitlines()
                 if re.match(r"^u\d{6} (OPEN|RAISE|CUT|SUSPEND|REINSTATE|FREEZE) ", line)]
    assert decisions, out[-3000:]
    progress = re.findall(r"applied ([\d,]+)", done.stdout)
    assert progress and int(progress[-1].replace(",", "")) > 0
    broker_port = int(re.search(r"embedded broker \(Tansu\) on kafka://127.0.0.1:(\d+)",
                                out).group(1))  # type: ignore[union-attr]
    web_port = int(re.search(r"metrics http://127.0.0.1:(\d+)/metrics", out)
                   .group(1))  # type: ignore[union-attr]
    assert web_port == port
    assert f"127.0.0.1:{port}" in (tmp_path / "data" / "demo-prometheus.yml").read_text()
    assert "monitor it: prometheus --config.file=" in out
    assert not listening(broker_port) and not listening(web_port), "left something running"
