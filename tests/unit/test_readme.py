"""The README stays true: every command and setting it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from limitstream.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_command_in_the_readme_exists() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    # Commands as the README writes them: in code, after the console script.
    named = set(re.findall(r"`limitstream (\w+)", README))
    named |= set(re.findall(r"\.venv/bin/limitstream (\w+)", README))
    assert named <= commands, named - commands


def test_every_setting_in_the_readme_is_read_by_the_settings() -> None:
    source = (ROOT / "streams" / "settings.py").read_text()
    read = set(re.findall(r'get(?:_int)?\("([A-Z_]+)"', source))
    documented = set(re.findall(r"`LIMITSTREAM_([A-Z_]+)`", README))
    documented -= {"TOPIC_PREFIX"}  # read through the topic helpers
    assert documented <= read, documented - read


def test_files_the_readme_points_at_exist() -> None:
    for path in re.findall(r"\]\(([\w./-]+)\)", README):
        assert (ROOT / path).exists(), path
    assert (ROOT / "streams" / "samples" / "sample.jsonl").exists()
