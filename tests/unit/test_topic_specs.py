"""Topic settings have one place (streams/kafka_io.topic_specs): what the worker, the compose
init and the Kubernetes job create (all through `limitstream topics` / ensure_topics)."""

from __future__ import annotations

import dataclasses

import pytest

from limitstream.topics import describe
from streams.kafka_io import DAY_MS, topic_specs
from streams.settings import Settings, SettingsError, Topics


def specs(**env: str) -> dict[str, tuple[int, int, dict[str, str]]]:
    settings = Settings.from_env({f"LIMITSTREAM_{k}": v for k, v in env.items()})
    return {s.name: (s.num_partitions, s.replication_factor, s.topic_configs)
            for s in topic_specs(settings)}


def test_every_topic_with_its_partitions() -> None:
    got = specs(PARTITIONS="12", REPLICATION_FACTOR="3")
    t = Topics()
    assert set(got) == {getattr(t, f.name) for f in dataclasses.fields(Topics)}
    for name in (*t.inputs(), t.limit_changes, t.account_status, t.decisions, t.dead_letter):
        assert got[name][0] == 12, f"{name} must be co-partitioned with the inputs"
    assert got[t.labels][0] == got[t.model_snapshots][0] == 1
    assert {rf for _, rf, _ in got.values()} == {3}


def test_durability_and_cleanup_policy_of_every_topic() -> None:
    got = specs(REPLICATION_FACTOR="3")
    for name, (_, _, configs) in got.items():
        assert configs["min.insync.replicas"] == "2", name  # replication factor less one
        assert configs["unclean.leader.election.enable"] == "false", name
        expected = "compact" if name == Topics().model_snapshots else "delete"
        assert configs["cleanup.policy"] == expected, name
        assert "retention.ms" in configs, name
    assert specs(REPLICATION_FACTOR="3", MIN_INSYNC_REPLICAS="3")["decisions"][2][
        "min.insync.replicas"] == "3"
    assert specs()["decisions"][2]["min.insync.replicas"] == "1"  # one broker: one copy


def test_the_audit_topic_keeps_years_and_follows_its_setting() -> None:
    default = int(specs()["decisions"][2]["retention.ms"])
    assert default >= 5 * 365 * DAY_MS
    assert int(specs()["transactions"][2]["retention.ms"]) == 7 * DAY_MS
    assert specs(AUDIT_RETENTION_DAYS="3650")["decisions"][2]["retention.ms"] == str(
        3650 * DAY_MS)


def test_settings_refuse_an_impossible_min_isr_and_the_example_hmac_key() -> None:
    with pytest.raises(SettingsError, match="MIN_INSYNC_REPLICAS"):
        Settings.from_env({"LIMITSTREAM_REPLICATION_FACTOR": "2",
                           "LIMITSTREAM_MIN_INSYNC_REPLICAS": "3"})
    # deploy/k8s/secrets/model.env.example, copied unchanged.
    with pytest.raises(SettingsError, match="placeholder"):
        Settings.from_env({"LIMITSTREAM_MODEL_HMAC_KEY": "REPLACE_ME_random_hex_secret"})
    assert Settings.from_env({"LIMITSTREAM_MODEL_HMAC_KEY": "a" * 32}).model_hmac_key


def test_topics_command_prints_what_it_creates() -> None:
    lines = describe(Settings.from_env({"LIMITSTREAM_AUDIT_RETENTION_DAYS": "10"}))
    (decisions,) = [line for line in lines if line.startswith("decisions ")]
    assert f"retention.ms={10 * DAY_MS}" in decisions
    assert len(lines) == len(dataclasses.fields(Topics))
