"""The Faust app factory and the Kafka client settings shared by every client we build.

A factory, not a module-level app: the CLI, the tests and the benchmarks each build their own
app from a :class:`~streams.settings.Settings`, several in one process if they like.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from streams.offset_trace import OffsetTrace
from streams.settings import Settings

#: Producer tuning. The agent hands a whole batch's records to the producer before it yields
#: (agents/user_agent.py), so they share requests without any linger, and a linger would only
#: delay the delivery the batch waits for (bench.latency: p50 at 10 % load 30 -> 18 ms without
#: the former 5 ms). Large batches: one request per broker for a batch of 1 000 users.
PRODUCER_LINGER_S = 0.0
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
MAX_POLL_RECORDS = 2000


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as the Java client and aiokafka do it).

    Cached for the active users: aiokafka's murmur2 is pure Python and the worker asks it
    several times per event (the re-key check, the changelog, the store).
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    sec = settings.security
    if sec.protocol not in ("SSL", "SASL_SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=sec.ssl_cafile or None, certfile=sec.ssl_certfile or None,
        keyfile=sec.ssl_keyfile or None)
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the configured security protocol (None: plaintext)."""
    sec = settings.security
    context = ssl_context(settings)
    if sec.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=sec.sasl_username, password=sec.sasl_password.value,
            mechanism=sec.sasl_mechanism, ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for plain aiokafka clients (CLI, snapshot follower)."""
    sec = settings.security
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.broker.replace("kafka://", "").split(";"),
        "security_protocol": sec.protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kw["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kw.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                  sasl_plain_password=sec.sasl_password.value)
    return kw


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from the settings; agents are registered by :mod:`agents`, which
    also installs its corrections to Faust (:mod:`agents.faust_fixes`)."""
    if not settings.broker:
        raise ValueError("create_app needs a broker URL (start the embedded broker first)")
    conf: dict[str, Any] = {
        "broker": settings.broker,
        "store": settings.store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "table_standby_replicas": settings.standby_replicas,
        "processing_guarantee": "at_least_once",
        "web_enabled": True,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "canonical_url": settings.advertised_url,
        "producer_linger": PRODUCER_LINGER_S,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "broker_max_poll_records": MAX_POLL_RECORDS,
        "consumer_auto_offset_reset": "earliest",
        # Faust compares a RocksDB store's persisted offset with the changelog's reported end
        # offset, which the embedded broker under-reports: every restart failed there. The
        # user table runs the same check against its recovery fence instead
        # (agents/users_table.check_persisted_offsets).
        "recovery_consistency_check": False,
        # Group timings and sizes from the settings: their defaults are values Apache
        # Kafka's brokers accept out of the box (tests/unit/test_kafka_contract.py). The
        # session timeout is how long a crashed worker's partitions wait; the rebalance
        # timeout how long the coordinator waits for members to rejoin: a member that takes
        # longer (finishing its batch in ``on_partitions_revoked`` on a loaded machine) is
        # dropped from the generation while it still writes, a zombie whose late changelog
        # records could follow the new owner's.
        "broker_session_timeout": settings.session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": settings.rebalance_timeout_ms / 1000,
        "broker_commit_interval": settings.commit_interval_ms / 1000,
        "producer_max_request_size": settings.max_request_bytes,
        # The user table is keyed by user_id; a small key index keeps memory flat.
        "table_cleanup_interval": 30.0,
    }
    if settings.instance_id:
        # Static membership: a restarted worker with the same identity takes its partitions
        # back without a full rebalance (about 20 s -> 11 s on the embedded broker).
        conf["consumer_group_instance_id"] = settings.instance_id
    credentials = faust_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    app = faust.App(settings.app_id, **conf)
    if settings.offset_trace:
        app.limitstream_offset_trace = OffsetTrace(settings.offset_trace)  # type: ignore[attr-defined]
    return app
