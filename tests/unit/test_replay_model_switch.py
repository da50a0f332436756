"""``limitstream replay --model off`` decides on rules alone, as a worker without
``LIMITSTREAM_MODEL_HMAC_KEY`` does; ``--model learn`` (the default) learns in process."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from lab.replay import Replay, write_outputs
from lab.simulate import SimConfig, write_log
from limitstream.cli import build_parser
from policies.engine_factory import engine_for
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import read_log
from streams.settings import Settings

#: The portfolio of the chaos soak (issue 20): enough labels (about 820) for the default
#: policy's gate, so the learning replay lets the model decide some of the cuts and raises.
USERS, DAYS = 300, 120


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay-model") / "log.jsonl"
    write_log(SimConfig(users=USERS, days=DAYS, seed=7), path, progress=False)
    return path


def replay_cli(log: Path, out: Path, *model: str) -> bytes:
    # The command as parsed from its arguments (main() would also retune this process's GC).
    args = build_parser().parse_args(["replay", str(log), "--output", str(out), *model])
    assert args.func(args) == 0
    return out.read_bytes()


def risk_sources(outputs: bytes) -> Counter[str]:
    lines = [orjson.loads(line) for line in outputs.splitlines()]
    return Counter(o["value"]["risk_source"] for o in lines if o["topic"] == "decisions")


def test_model_off_decides_on_rules_as_a_worker_without_a_model_key(
        log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("LIMITSTREAM_")]:
        monkeypatch.delenv(name)  # the default settings, as a worker's without a key
    learnt = replay_cli(log, tmp_path / "learn.jsonl")
    off = replay_cli(log, tmp_path / "off.jsonl", "--model", "off")

    # The switch matters on this log: learning in process, the model takes some decisions.
    assert risk_sources(learnt)["model"] > 0
    sources = risk_sources(off)
    assert sources["model"] == 0 and sources["rules"] > 0

    # What a worker without a model key runs: the engine the worker builds, whose scorer
    # never receives a snapshot — byte for byte, in the same order.
    settings = Settings.from_env({})
    engine, _ = engine_for(load_policy(settings.policy_file), settings)
    rules_only = io.BytesIO()
    write_outputs(Replay(engine, Limits.from_settings(settings),
                         partitions=settings.partitions).run(read_log(log)), rules_only)
    assert off == rules_only.getvalue()
    assert learnt != off
