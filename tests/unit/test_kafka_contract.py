"""Every Kafka client setting limitstream uses, held against Apache Kafka's broker defaults.

No Apache Kafka broker runs here (the tests use the embedded Tansu broker, which accepts
settings Kafka refuses), so the broker's side of the contract is written down below, each
value with its documentation, and every client setting is checked against it: the workers of
``docker-compose.kafka.yml`` must join a stock cluster with the default settings.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import pytest

from streams.app import PRODUCER_MAX_BATCH_BYTES, create_app
from streams.codec import Limits
from streams.settings import Settings, SettingsError

#: Apache Kafka's broker configuration defaults (https://kafka.apache.org/documentation/
#: #brokerconfigs, 3.x and 4.x alike). Managed clusters mostly keep them.
KAFKA_BROKER_DEFAULTS = {
    # A JoinGroup whose session timeout lies outside [min, max] fails with
    # INVALID_SESSION_TIMEOUT: the worker never joins.
    # https://kafka.apache.org/documentation/#brokerconfigs_group.min.session.timeout.ms
    "group.min.session.timeout.ms": 6_000,
    # https://kafka.apache.org/documentation/#brokerconfigs_group.max.session.timeout.ms
    "group.max.session.timeout.ms": 1_800_000,
    # The largest record batch the broker accepts (and the topic-level max.message.bytes
    # defaults to it): a larger produce request fails with MESSAGE_TOO_LARGE.
    # https://kafka.apache.org/documentation/#brokerconfigs_message.max.bytes
    "message.max.bytes": 1_048_588,
    # The largest request the broker's socket server reads.
    # https://kafka.apache.org/documentation/#brokerconfigs_socket.request.max.bytes
    "socket.request.max.bytes": 104_857_600,
    # The broker closes connections idle longer: a client must close them first, or its next
    # request on one fails.
    # https://kafka.apache.org/documentation/#brokerconfigs_connections.max.idle.ms
    "connections.max.idle.ms": 600_000,
    # The most a broker returns to one fetch request.
    # https://kafka.apache.org/documentation/#brokerconfigs_fetch.max.bytes
    "fetch.max.bytes": 57_671_680,
}


def worker_conf(settings: Settings) -> Any:
    """The Faust configuration a worker runs with (the app is built, never started)."""
    return create_app(settings).conf


@pytest.fixture
def default() -> Settings:
    return Settings(broker="kafka://kafka-1:9092")


def test_the_session_timeout_is_inside_the_brokers_bounds(default: Settings) -> None:
    conf = worker_conf(default)
    session_ms = conf.broker_session_timeout * 1000
    assert KAFKA_BROKER_DEFAULTS["group.min.session.timeout.ms"] <= session_ms
    assert session_ms <= KAFKA_BROKER_DEFAULTS["group.max.session.timeout.ms"]


def test_heartbeats_come_several_times_per_session(default: Settings) -> None:
    """Kafka's consumer documentation: heartbeat.interval.ms must be below
    session.timeout.ms, "typically no higher than 1/3 of that value"."""
    conf = worker_conf(default)
    assert conf.broker_heartbeat_interval * 3 <= conf.broker_session_timeout


def test_requests_outlast_the_group_timeouts(default: Settings) -> None:
    """A JoinGroup is answered when the rebalance completes: a request timeout shorter than
    the rebalance (or session) timeout would abandon a join that is going well."""
    conf = worker_conf(default)
    assert conf.broker_request_timeout > conf.broker_rebalance_timeout
    assert conf.broker_request_timeout > conf.broker_session_timeout


def test_produced_requests_and_batches_fit_the_brokers_message_limit(default: Settings) -> None:
    conf = worker_conf(default)
    limit = KAFKA_BROKER_DEFAULTS["message.max.bytes"]
    assert conf.producer_max_request_size == default.max_request_bytes <= limit
    assert conf.producer_max_batch_size == PRODUCER_MAX_BATCH_BYTES <= limit
    # The plain aiokafka producers (limitstream produce, redrive) keep aiokafka's default.
    plain = aiokafka.AIOKafkaProducer.__init__.__kwdefaults__["max_request_size"]
    assert plain <= limit


def test_a_dead_letter_is_well_under_the_producers_request_limit(default: Settings) -> None:
    limits = Limits.from_settings(default)
    assert limits.dead_letter_max_bytes * 4 <= default.max_request_bytes
    # Any input the worker accepts by size fits a dead letter whole (re-drivable).
    assert 2 * (limits.max_message_bytes + limits.max_key_bytes) + 16_384 \
        <= limits.dead_letter_max_bytes


def test_fetches_and_idle_connections_respect_the_broker(default: Settings) -> None:
    conf = worker_conf(default)
    assert conf.consumer_max_fetch_size <= KAFKA_BROKER_DEFAULTS["fetch.max.bytes"]
    assert conf.consumer_connections_max_idle_ms < KAFKA_BROKER_DEFAULTS[
        "connections.max.idle.ms"]
    assert conf.producer_connections_max_idle_ms < KAFKA_BROKER_DEFAULTS[
        "connections.max.idle.ms"]
    assert default.max_request_bytes < KAFKA_BROKER_DEFAULTS["socket.request.max.bytes"]


def test_the_settings_reach_the_worker_and_bad_combinations_are_refused() -> None:
    env = {"LIMITSTREAM_BROKER": "kafka://kafka-1:9092",
           "LIMITSTREAM_SESSION_TIMEOUT_MS": "45000", "LIMITSTREAM_HEARTBEAT_INTERVAL_MS": "3000",
           "LIMITSTREAM_REBALANCE_TIMEOUT_MS": "60000",
           "LIMITSTREAM_MAX_REQUEST_BYTES": "524288", "LIMITSTREAM_COMMIT_INTERVAL_MS": "1000"}
    conf = worker_conf(Settings.from_env(env))
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval,
            conf.broker_rebalance_timeout, conf.producer_max_request_size,
            conf.broker_commit_interval) == (45.0, 3.0, 60.0, 524_288, 1.0)
    assert worker_conf(Settings.from_env({"LIMITSTREAM_BROKER": env["LIMITSTREAM_BROKER"]})
            ).broker_commit_interval == 2.8  # Faust's default
    with pytest.raises(SettingsError, match="HEARTBEAT"):
        Settings.from_env({**env, "LIMITSTREAM_HEARTBEAT_INTERVAL_MS": "45000"})
    with pytest.raises(SettingsError, match="MAX_REQUEST_BYTES"):
        Settings.from_env({**env, "LIMITSTREAM_MAX_MESSAGE_BYTES": "100000"})
