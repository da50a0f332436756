"""`limitstream simulate --to-broker --out LOG`: the events on the input topics, the ground
truth beside LOG, from one run of the simulation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from lab.simulate import SimConfig, ground_truth, simulate, truth_path
from limitstream.cli import main
from tests.e2e.helpers import read_topic

pytestmark = pytest.mark.broker


def test_simulate_publishes_the_events_and_writes_the_truth(
        kafka_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in kafka_env.items():
        monkeypatch.setenv(name, value)
    cfg = SimConfig(users=30, days=40, seed=11)
    out = tmp_path / "pop.jsonl"
    assert main(["simulate", "--users", "30", "--days", "40", "--seed", "11",
                 "--to-broker", "--out", str(out), "--no-progress"]) == 0

    expected = list(simulate(cfg))
    per_topic = Counter(line.topic for line in expected)
    for topic, n in per_topic.items():
        got = read_topic(kafka_env, topic)
        assert all(r["key"] == r["value"]["user_id"] for r in got)
        assert sorted(orjson.dumps(r["value"], option=orjson.OPT_SORT_KEYS) for r in got) == (
            sorted(orjson.dumps(line.value, option=orjson.OPT_SORT_KEYS)
                   for line in expected if line.topic == topic)), topic
        assert len(got) == n
    assert not out.exists()  # the events went to the broker; only the truth is written
    truth = [orjson.loads(line) for line in truth_path(out).read_bytes().splitlines()]
    assert truth == ground_truth(cfg)
