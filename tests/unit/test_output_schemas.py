"""Every output the core produces agrees with its topic's JSON Schema in streams/schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from features import FeatureConfig
from lab.replay import Replay
from policies.engine import Engine
from policies.spec import load_policy
from streams.codec import Limits
from streams.kafka_io import LogRecord
from streams.settings import DEFAULT_POLICY
from tests.stories import all_stories_log

SCHEMAS = Path(__file__).resolve().parents[2] / "streams" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def test_outputs_of_every_story_match_their_schemas() -> None:
    bad = [LogRecord("transactions", b"u1", b"{oops"),
           LogRecord("repayments", None, orjson.dumps({"kind": "paid"}))]
    replay = Replay(Engine.rules_only(load_policy(DEFAULT_POLICY), FeatureConfig()),
                    Limits("CNY"))
    seen: dict[str, int] = {}
    for out in replay.run([*all_stories_log(), *bad]):
        if out.topic == "labels":
            continue
        value = orjson.loads(orjson.dumps(out.value))
        jsonschema.validate(value, schema(out.topic))
        seen[out.topic] = seen.get(out.topic, 0) + 1
    assert set(seen) == {"limit-changes", "account-status", "decisions", "dead-letter"}
    assert seen["dead-letter"] == 2
