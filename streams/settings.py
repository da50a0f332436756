"""Deployment settings: one frozen object, read from ``LIMITSTREAM_*`` environment variables.

Read once, by the CLI (never at import time), and passed down. Secrets are held in
:class:`Secret` so that ``repr()`` of the settings — which ends up in logs — never shows them.

Examples
--------
>>> s = Settings.from_env({"LIMITSTREAM_PARTITIONS": "4", "LIMITSTREAM_SASL_PASSWORD": "hunter2"})
>>> s.partitions
4
>>> "hunter2" in repr(s)
False
>>> s.topics.transactions
'transactions'
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PREFIX: Final = "LIMITSTREAM_"
DEFAULT_POLICY: Final = Path(__file__).resolve().parent.parent / "policies" / "default.toml"
#: The start of every placeholder value of deploy/k8s/secrets/*.env.example.
PLACEHOLDER: Final = "REPLACE_ME"
#: Faust's ``broker_request_timeout`` (90 s): it refuses a longer session timeout.
MAX_SESSION_TIMEOUT_MS: Final = 90_000


class SettingsError(ValueError):
    """A ``LIMITSTREAM_*`` variable has a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be printed: its repr is masked."""

    value: str

    def __repr__(self) -> str:
        return "Secret('****')" if self.value else "Secret('')"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names. ``LIMITSTREAM_TOPIC_PREFIX`` prefixes all of them (tests use it)."""

    transactions: str = "transactions"
    repayments: str = "repayments"
    account_events: str = "account-events"
    limit_commands: str = "limit-commands"
    limit_changes: str = "limit-changes"
    account_status: str = "account-status"
    decisions: str = "decisions"
    dead_letter: str = "dead-letter"
    #: Internal: input that arrived under the wrong key, re-keyed by ``user_id``.
    rekeyed: str = "limitstream-rekeyed"
    #: Internal: labelled examples for the single model trainer.
    labels: str = "limitstream-labels"
    #: Internal, compacted: HMAC-signed model snapshots read by every worker.
    model_snapshots: str = "model-snapshots"

    def inputs(self) -> tuple[str, ...]:
        """The topics the user agent consumes, in a fixed order."""
        return (
            self.transactions,
            self.repayments,
            self.account_events,
            self.limit_commands,
            self.rekeyed,
        )

    def prefixed(self, prefix: str) -> Topics:
        return Topics(**{f.name: prefix + getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Kafka client security, passed through to Faust and aiokafka."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: Secret = Secret("")
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the CLI and the replay need to know about the deployment."""

    #: Kafka bootstrap servers (``kafka://host:port``); empty means "start the embedded broker".
    broker: str = ""
    app_id: str = "limitstream"
    #: Partitions of every input topic (they are co-partitioned).
    partitions: int = 8
    replication_factor: int = 1
    #: ``memory://`` (tests, demo) or ``rocksdb://`` (production; needs the rocksdb extra).
    store: str = "memory://"
    data_dir: str = ".limitstream-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: How the other workers reach this one's web views (Faust's table routing sends
    #: ``/users/{id}`` to the owner's URL); empty: see :attr:`advertised_url`.
    web_url: str = ""
    policy_file: Path = DEFAULT_POLICY
    #: ISO 4217 code of the deployment's one currency; any other is bad input.
    currency: str = "CNY"
    #: ISO 3166 alpha-2 country of the deployment (cross-border share).
    home_country: str = "CN"
    #: Offset of local time from UTC in minutes (night-time share).
    utc_offset_minutes: int = 480
    #: Larger input messages go to dead-letter unread.
    max_message_bytes: int = 16_384
    #: ``at_least_once`` only: see ``validate``.
    processing_guarantee: str = "at_least_once"
    #: Static group membership id (e.g. the StatefulSet pod name); empty disables it.
    instance_id: str = ""
    standby_replicas: int = 0
    #: A file the workers append their processed, sought and committed input offsets to
    #: (streams/offset_trace.py); empty: no trace.
    offset_trace: str = ""
    #: Key authenticating model snapshots; required to read or publish any snapshot.
    model_hmac_key: Secret = Secret("")
    #: The trainer publishes a snapshot every this many labels learnt.
    snapshot_every_labels: int = 200
    #: The River pipeline the trainer learns (policies.model.RiskModel kinds).
    model_kind: str = "logistic"
    log_level: str = "warning"
    # -- event-time order and liveness of the user agent (agents/user_agent.py) --
    #: How long a partition group waits for an input partition that has nothing buffered
    #: but is not caught up (records are on the broker, not yet fetched), before it applies
    #: its records out of event-time order. Workers starting on a bulk-published backlog, or
    #: restarted or joined mid-stream, waited at most 3.8 s for such a partition (p50 16-30
    #: ms, p99 0.6-2.2 s; tests/e2e/test_event_order.py on the embedded broker, whose fetches
    #: bring one partition at a time, on a loaded 2-core machine): 10 s leaves a margin.
    max_idle_ms: int = 10_000
    #: Records a worker holds for ordering at most; past it the oldest head is applied. A
    #: held record of 150 bytes took 830 bytes (its Faust event and message): about 80 MB.
    order_buffer_max: int = 100_000
    #: /healthz fails when records wait and none was applied for this long. Far above what
    #: a healthy agent takes: the ordering bound (max_idle_ms) and the isolation of a poison
    #: record (8 s from its batch's first failure to the rest applied, e2e), with room for a
    #: broker's leader election.
    stall_timeout_s: int = 120
    topics: Topics = field(default_factory=Topics)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    # -- Input bounds, clock sanity and Kafka client limits (issue 16) ---------------------
    # Client defaults are values Apache Kafka's brokers accept out of the box (held by
    # tests/unit/test_kafka_contract.py), never values only the embedded broker tolerates.
    #: Larger record keys go to dead-letter unread: a key is an id (a user_id has at most
    #: 128 characters); 1 KiB leaves room for another producer's ids.
    max_key_bytes: int = 1_024
    #: An event whose ``ts`` is further ahead of its record's broker timestamp goes to
    #: dead-letter as ``ts_in_future`` instead of moving the user's clock.
    max_clock_skew_ms: int = 86_400_000
    #: Consumer group session timeout: a crashed worker's partitions move after this. Kafka
    #: refuses a JoinGroup outside [group.min.session.timeout.ms, group.max.session.timeout.ms]
    #: (6 000 and 1 800 000 ms by default); 10 s is aiokafka's own default.
    session_timeout_ms: int = 10_000
    #: Heartbeats to the group coordinator; also how soon a member hears of a rebalance.
    heartbeat_interval_ms: int = 1_000
    #: How long the coordinator waits for members to rejoin a rebalance (see streams/app.py).
    rebalance_timeout_ms: int = 30_000
    #: How often a worker commits the input offsets it has applied, stored and acked (Faust's
    #: ``broker_commit_interval``, whose 2.8 s default this keeps). Shorter: fewer outputs sent
    #: again after a crash, one more offset-commit request per interval.
    commit_interval_ms: int = 2_800
    #: The producer's largest request (and so record); at most Kafka's message.max.bytes
    #: (1 048 588 by default). Faust's default.
    max_request_bytes: int = 1_000_000

    @property
    def dead_letter_max_bytes(self) -> int:
        """No dead letter is larger (key and value): a quarter of the producer's request, so it
        is well under the limit whatever shares its request."""
        return self.max_request_bytes // 4

    def _validate_kafka_limits(self) -> None:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise SettingsError(f"{PREFIX}HEARTBEAT_INTERVAL_MS must be below "
                                f"{PREFIX}SESSION_TIMEOUT_MS (Kafka advises at most a third)")
        if self.session_timeout_ms > MAX_SESSION_TIMEOUT_MS:
            raise SettingsError(f"{PREFIX}SESSION_TIMEOUT_MS={self.session_timeout_ms}: at most "
                                f"{MAX_SESSION_TIMEOUT_MS} (Faust's request timeout)")
        # Any record that passes the size checks must fit a dead letter whole, so that it can
        # be re-driven: its value in base64 (4/3) and its key twice (the record's key and a
        # field), plus the error and the fixed fields (16 KiB).
        need = 2 * (self.max_message_bytes + self.max_key_bytes) + 16_384
        if need > self.dead_letter_max_bytes:
            raise SettingsError(
                f"{PREFIX}MAX_MESSAGE_BYTES={self.max_message_bytes} and {PREFIX}MAX_KEY_BYTES="
                f"{self.max_key_bytes} need dead letters of {need} bytes, above a quarter of "
                f"{PREFIX}MAX_REQUEST_BYTES={self.max_request_bytes}: raise it or lower them")

    # -- Topic configuration and deployment checks (issue 18) --------------------------------
    # The one place for the configs of the topics limitstream creates: the worker, the compose
    # init and the Kubernetes job all run streams.kafka_io.ensure_topics (`limitstream topics`).
    #: Retention of the ``decisions`` audit topic, days: an audit trail of credit decisions
    #: is kept for years (7 here; set your legal period, or archive it downstream).
    audit_retention_days: int = 2_555
    #: ``min.insync.replicas`` of every topic created; 0: the replication factor less one (at
    #: least 1), so that with acks=all a write survives the loss of any one broker.
    min_insync_replicas: int = 0

    @property
    def topic_min_insync_replicas(self) -> int:
        return self.min_insync_replicas or max(1, self.replication_factor - 1)

    def _validate_deployment(self) -> None:
        if self.min_insync_replicas > self.replication_factor:
            raise SettingsError(
                f"{PREFIX}MIN_INSYNC_REPLICAS={self.min_insync_replicas} is above "
                f"{PREFIX}REPLICATION_FACTOR={self.replication_factor}: no write could succeed")
        # The example files ship placeholders: one copied unchanged must not run as a key.
        if self.model_hmac_key.value.startswith(PLACEHOLDER):
            raise SettingsError(f"{PREFIX}MODEL_HMAC_KEY is the example's placeholder "
                                f"({PLACEHOLDER}...): set a random secret")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build the settings from an environment mapping (``os.environ`` in the CLI)."""

        def get(name: str, default: str) -> str:
            return env.get(PREFIX + name, default)

        def get_int(name: str, default: int, minimum: int = 0) -> int:
            raw = get(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{PREFIX}{name}={raw!r}: expected an integer") from None
            if value < minimum:
                raise SettingsError(f"{PREFIX}{name}={value}: must be >= {minimum}")
            return value

        topics = Topics()
        overrides = {
            f.name: env[PREFIX + "TOPIC_" + f.name.upper()]
            for f in dataclasses.fields(Topics)
            if PREFIX + "TOPIC_" + f.name.upper() in env
        }
        if overrides:
            topics = dataclasses.replace(topics, **overrides)
        topics = topics.prefixed(get("TOPIC_PREFIX", ""))

        security = KafkaSecurity(
            protocol=get("SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=get("SASL_MECHANISM", "PLAIN").upper(),
            sasl_username=get("SASL_USERNAME", ""),
            sasl_password=Secret(get("SASL_PASSWORD", "")),
            ssl_cafile=get("SSL_CAFILE", ""),
            ssl_certfile=get("SSL_CERTFILE", ""),
            ssl_keyfile=get("SSL_KEYFILE", ""),
        )
        settings = cls(
            broker=get("BROKER", ""),
            app_id=get("APP_ID", "limitstream"),
            partitions=get_int("PARTITIONS", 8, minimum=1),
            replication_factor=get_int("REPLICATION_FACTOR", 1, minimum=1),
            store=get("STORE", "memory://"),
            data_dir=get("DATA_DIR", ".limitstream-data"),
            web_host=get("WEB_HOST", "127.0.0.1"),
            web_port=get_int("WEB_PORT", 6066, minimum=1),
            web_url=get("WEB_URL", ""),
            policy_file=Path(get("POLICY_FILE", str(DEFAULT_POLICY))),
            currency=get("CURRENCY", "CNY").upper(),
            home_country=get("HOME_COUNTRY", "CN").upper(),
            utc_offset_minutes=int(get("UTC_OFFSET_MINUTES", "480")),
            max_message_bytes=get_int("MAX_MESSAGE_BYTES", 16_384, minimum=256),
            processing_guarantee=get("PROCESSING_GUARANTEE", "at_least_once"),
            instance_id=get("INSTANCE_ID", ""),
            standby_replicas=get_int("STANDBY_REPLICAS", 0),
            offset_trace=get("OFFSET_TRACE", ""),
            model_hmac_key=Secret(get("MODEL_HMAC_KEY", "")),
            snapshot_every_labels=get_int("SNAPSHOT_EVERY_LABELS", 200, minimum=1),
            model_kind=get("MODEL_KIND", "logistic"),
            log_level=get("LOG_LEVEL", "warning").lower(),
            max_idle_ms=get_int("MAX_IDLE_MS", 10_000),
            order_buffer_max=get_int("ORDER_BUFFER_MAX", 100_000, minimum=1),
            stall_timeout_s=get_int("STALL_TIMEOUT_S", 120, minimum=1),
            max_key_bytes=get_int("MAX_KEY_BYTES", 1_024, minimum=16),
            max_clock_skew_ms=get_int("MAX_CLOCK_SKEW_MS", 86_400_000),
            session_timeout_ms=get_int("SESSION_TIMEOUT_MS", 10_000, minimum=1),
            heartbeat_interval_ms=get_int("HEARTBEAT_INTERVAL_MS", 1_000, minimum=1),
            rebalance_timeout_ms=get_int("REBALANCE_TIMEOUT_MS", 30_000, minimum=1),
            commit_interval_ms=get_int("COMMIT_INTERVAL_MS", 2_800, minimum=10),
            max_request_bytes=get_int("MAX_REQUEST_BYTES", 1_000_000, minimum=65_536),
            audit_retention_days=get_int("AUDIT_RETENTION_DAYS", 2_555, minimum=1),
            min_insync_replicas=get_int("MIN_INSYNC_REPLICAS", 0),
            topics=topics,
            security=security,
        )
        settings.validate()
        return settings

    @property
    def advertised_url(self) -> str:
        """The URL this worker gives the others for routing: ``LIMITSTREAM_WEB_URL`` if set;
        else, when the web server binds every interface (containers), the host's fully
        qualified name (a StatefulSet pod's is ``<pod>.<service>.<namespace>.svc...``) —
        advertising ``0.0.0.0`` would send every routed request back to its sender; else
        the bind address."""
        if self.web_url:
            return self.web_url.rstrip("/")
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        return f"http://{host}:{self.web_port}"

    def validate(self) -> None:
        """Refuse settings the engine cannot honour, with the variable to fix."""
        if self.processing_guarantee != "at_least_once":
            # Exactly-once needs idempotent/transactional producers end to end; the embedded
            # broker refuses InitProducerId and returns aborted records to read_committed
            # readers. limitstream makes at-least-once exact itself (offsets in state, ids).
            raise SettingsError(
                f"{PREFIX}PROCESSING_GUARANTEE={self.processing_guarantee!r} is not supported: "
                "limitstream runs at_least_once and de-duplicates by offset and event_id "
                "(exactly_once needs transactional producers end to end)"
            )
        if self.web_url and not self.web_url.startswith(("http://", "https://")):
            raise SettingsError(f"{PREFIX}WEB_URL={self.web_url!r}: expected http(s)://host:port")
        if not self.store.startswith(("memory://", "rocksdb://")):
            raise SettingsError(f"{PREFIX}STORE={self.store!r}: use memory:// or rocksdb://")
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise SettingsError(f"{PREFIX}CURRENCY={self.currency!r}: expected an ISO 4217 code")
        if self.model_hmac_key and len(self.model_hmac_key.value.encode()) < 16:
            raise SettingsError(f"{PREFIX}MODEL_HMAC_KEY: at least 16 bytes (e.g. 32 random "
                                "hex characters from a secret store)")
        if self.model_kind not in ("logistic", "logistic_adagrad"):
            raise SettingsError(f"{PREFIX}MODEL_KIND={self.model_kind!r}: logistic or "
                                "logistic_adagrad")
        if self.security.protocol not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
            raise SettingsError(f"{PREFIX}SECURITY_PROTOCOL={self.security.protocol!r}: unknown")
        self._validate_kafka_limits()
        self._validate_deployment()

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker

    def with_broker(self, url: str) -> Settings:
        return dataclasses.replace(self, broker=url)
