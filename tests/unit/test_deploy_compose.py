"""docker-compose.kafka.yml, statically: no Docker, no network.

Three KRaft brokers with the stated durability, every topic created with its partitions and
configs, workers configured only with real ``LIMITSTREAM_*`` settings, no literal secret.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import PREFIX, KafkaSecurity, Settings, Topics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
SETTINGS_SOURCE = ROOT / "streams" / "settings.py"

WORKERS = ("worker-1", "worker-2")
BROKERS = ("kafka-1", "kafka-2", "kafka-3")


# ------------------------------------------------------------------- shared helpers


def setting_env_names() -> frozenset[str]:
    """Every ``LIMITSTREAM_*`` variable ``Settings.from_env`` reads.

    Scans streams/settings.py for the ``get("NAME"`` / ``get_int("NAME"`` calls, plus the
    per-topic overrides (``LIMITSTREAM_TOPIC_<FIELD>``) it derives from :class:`Topics`.
    """
    source = SETTINGS_SOURCE.read_text()
    names = {PREFIX + n for n in re.findall(r"\bget(?:_int)?\(\s*\"([A-Z0-9_]+)\"", source)}
    names |= {f"{PREFIX}TOPIC_{f.name.upper()}" for f in dataclasses.fields(Topics)}
    return frozenset(names)


def check_limitstream_env(env: Mapping[str, Any], where: str) -> Settings:
    """Every LIMITSTREAM_* name is a real setting, and the values build valid Settings."""
    known = setting_env_names()
    names = {k for k in env if k.startswith(PREFIX)}
    unknown = names - known
    assert not unknown, f"{where}: unknown settings {sorted(unknown)}"
    # Compose interpolation (${VAR:?message}) and secret references are resolved at run time:
    # stand in a dummy for them so that the rest is checked by the real parser.
    resolved = {
        k: ("dummy-secret-of-32-characters-x" if str(v).startswith("${") else str(v))
        for k, v in env.items()
        if k.startswith(PREFIX)
    }
    return Settings.from_env(resolved)


def test_setting_env_names_finds_the_settings() -> None:
    names = setting_env_names()
    assert {
        "LIMITSTREAM_BROKER",
        "LIMITSTREAM_WEB_PORT",
        "LIMITSTREAM_STORE",
        "LIMITSTREAM_MODEL_HMAC_KEY",
        "LIMITSTREAM_INSTANCE_ID",
        "LIMITSTREAM_SASL_PASSWORD",
        "LIMITSTREAM_TOPIC_PREFIX",
        "LIMITSTREAM_TOPIC_DEAD_LETTER",
    } <= names
    # The scan misses nothing: every field of Settings and of its KafkaSecurity has its
    # variable (a missed one would make these tests reject a real setting).
    bare = {n.removeprefix(PREFIX) for n in names}
    fields = {f.name.upper() for f in dataclasses.fields(Settings)} - {"TOPICS", "SECURITY"}
    assert fields <= bare
    security = {f.name.upper() for f in dataclasses.fields(KafkaSecurity)} - {"PROTOCOL"}
    assert security | {"SECURITY_PROTOCOL"} <= bare


# ------------------------------------------------------------------- the compose file


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            build = service["build"]
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name


def test_published_ports_do_not_collide_and_stay_on_loopback(compose: dict[str, Any]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            assert len(parts) == 3, f"{name}: {port} must name the host address"
            host, host_port, _container_port = parts
            assert host == "127.0.0.1", f"{name}: {port} is published beyond this host"
            key = (host, host_port)
            assert key not in seen, f"{name} and {seen[key]} both publish {port}"
            seen[key] = name


def test_referenced_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


def test_three_kraft_brokers_with_the_stated_durability(compose: dict[str, Any]) -> None:
    voters = set()
    node_ids = set()
    for name in BROKERS:
        service = services(compose)[name]
        assert str(service["image"]).startswith("apache/kafka:"), name
        env = service["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert "ZOOKEEPER" not in " ".join(env), name
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]).lower() == "false", name
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2, name
        assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false", name
        node_ids.add(int(env["KAFKA_NODE_ID"]))
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert "healthcheck" in service, name
    assert node_ids == {1, 2, 3}
    (quorum,) = voters  # the same quorum on every node
    assert {v.split("@")[0] for v in quorum.split(",")} == {"1", "2", "3"}
    assert {v.split("@")[1].split(":")[0] for v in quorum.split(",")} == set(BROKERS)


def test_topic_creation_runs_the_workers_own_topic_code(compose: dict[str, Any]) -> None:
    """kafka-init runs `limitstream topics` (streams/kafka_io.py topic_specs, as the worker
    does) with the workers' settings: one place for partitions, retention and durability."""
    init = services(compose)["kafka-init"]
    assert [*init["entrypoint"], *init["command"]] == ["limitstream", "topics"]
    assert init["build"]["dockerfile"] == "deploy/Dockerfile"
    assert init["healthcheck"] == {"disable": True}  # not a worker: no /healthz
    for name in BROKERS:
        assert init["depends_on"][name]["condition"] == "service_healthy"
    settings = check_limitstream_env(init["environment"], "kafka-init")
    assert settings.replication_factor == 3
    assert settings.topic_min_insync_replicas == 2
    assert settings.audit_retention_days >= 5 * 365, "the audit trail is kept for years"
    for worker in WORKERS:
        worker_settings = check_limitstream_env(services(compose)[worker]["environment"], worker)
        assert worker_settings.partitions == settings.partitions
        assert worker_settings.topic_min_insync_replicas == settings.topic_min_insync_replicas


def test_restart_policies_and_limits(compose: dict[str, Any]) -> None:
    every = services(compose)
    for name in (*BROKERS, *WORKERS, "prometheus", "alertmanager", "grafana"):
        assert every[name]["restart"] == "unless-stopped", name
    for name in ("kafka-init", "simulator"):
        assert every[name]["restart"] == "no", name  # one-shot jobs
    for name in WORKERS:
        assert every[name]["mem_limit"] == "2g", name
        assert float(every[name]["cpus"]) >= 1, name
    # The simulator does not serve the worker's /healthz that the image's HEALTHCHECK probes.
    assert every["simulator"]["healthcheck"] == {"disable": True}


def test_alertmanager_is_wired_to_prometheus(compose: dict[str, Any]) -> None:
    am = services(compose)["alertmanager"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in am["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert "127.0.0.1:9093:9093" in am["ports"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for a in scrape["alerting"]["alertmanagers"]
               for c in a["static_configs"] for t in c["targets"]]
    assert targets == ["alertmanager:9093"]
    routes = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in routes["receivers"]}
    assert routes["route"]["receiver"] in receivers
    assert {r["receiver"] for r in routes["route"]["routes"]} <= receivers


def test_workers_use_only_real_settings(compose: dict[str, Any]) -> None:
    for name in WORKERS:
        service = services(compose)[name]
        env = service["environment"]
        settings = check_limitstream_env(env, name)
        assert settings.store.startswith("rocksdb://"), name
        assert settings.instance_id == name, name
        assert settings.partitions == 12, name
        assert settings.replication_factor == 3, name
        assert settings.broker.startswith("kafka://"), name
        for broker in BROKERS:
            assert broker in settings.broker, name
        assert settings.web_port == 6066, name
        # Table routing reaches the worker by its compose hostname and port.
        assert settings.advertised_url == f"http://{service['hostname']}:{settings.web_port}", name
        # The data volume is mounted where the store writes.
        assert any(str(v).endswith(":" + settings.data_dir) for v in service["volumes"]), name
        assert service["depends_on"]["kafka-init"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    ids = {services(compose)[w]["environment"]["LIMITSTREAM_INSTANCE_ID"] for w in WORKERS}
    assert len(ids) == len(WORKERS), "each worker needs its own static membership id"


def test_no_literal_secret(compose: dict[str, Any]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
    for name, service in services(compose).items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if secret.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}", str(value)), (
                    f"{name}: {key} must come from the host's environment, not a literal"
                )
    hmac = services(compose)["worker-1"]["environment"]["LIMITSTREAM_MODEL_HMAC_KEY"]
    # ${VAR:?message}: compose refuses to start without it rather than run unauthenticated.
    assert hmac.startswith("${LIMITSTREAM_MODEL_HMAC_KEY:?"), hmac


def test_simulator_is_an_optional_profile(compose: dict[str, Any]) -> None:
    sim = services(compose)["simulator"]
    assert sim["profiles"] == ["sim"]
    argv = [*sim["entrypoint"], *sim["command"]]
    assert argv == ["limitstream", "simulate", "--users", "10000", "--days", "90", "--to-broker"]
    check_limitstream_env(sim["environment"], "simulator")
    assert sim["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_prometheus_and_grafana_are_provisioned_from_deploy(compose: dict[str, Any]) -> None:
    prometheus = services(compose)["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = services(compose)["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "limitstream"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    port = services(compose)["worker-1"]["environment"]["LIMITSTREAM_WEB_PORT"]
    assert targets == {f"{w}:{port}" for w in WORKERS}
