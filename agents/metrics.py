"""Every Prometheus series limitstream exports, defined in one place (STYLE habit 7).

:class:`Metrics` is one bundle, built once per app by :meth:`Metrics.create` on a
:class:`~prometheus_client.CollectorRegistry` that the caller owns and injects; the agents
receive the bundle, never a module-level metric. Tests build it on a fresh registry, so an app
built twice in one process never meets prometheus-client's "Duplicated timeseries" error (the
global ``REGISTRY`` is never used here).

Rules every series follows:

* ``user_id`` is never a label (unbounded cardinality); per-user facts are aggregated into
  gauges of this worker's active partitions.
* Label values come from closed sets (topics, reason codes, actions, statuses, stages). A
  label whose value is taken from input (the re-key source header becomes the ``topic`` of a
  dead letter) is mapped onto its closed set by :class:`ClosedCounter`: an unknown value is
  counted as ``other``, so a producer cannot mint series. Every closed set is pre-initialised
  to 0 so that ``rate()``/``increase()`` see the first increment (a series born at 1
  mid-incident hides the incident's start) and dashboards show a 0 instead of "no data".
* Durations are in seconds (Prometheus convention); money in integer minor units.

The framework-level series (messages in, commits, rebalances, table operations, ...) come
from Faust's own :class:`~faust.sensors.prometheus.PrometheusMonitor`, installed on the same
registry by :func:`agents.faust_monitor.install_faust_monitor` under the fixed ``faust_``
prefix. The user agent sends its outputs and changelog records straight to the producer, so
Faust's send sensors do not see them: the ``outputs_sent``/``send_latency``/``send_errors``
series are ours. The standard ``process_*``, ``python_gc_*`` and ``python_info`` collectors
of prometheus-client are registered on the same registry (memory against the pod limit).

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = Metrics.create(registry)
>>> metrics.events.labels(topic="transactions", kind="purchase").inc()
>>> registry.get_sample_value(
...     "limitstream_events_total", {"topic": "transactions", "kind": "purchase"})
1.0
>>> metrics.set_model("v2", "snapshot")
>>> registry.get_sample_value("limitstream_model_info", {"version": "v2", "source": "snapshot"})
1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from policies.engine import ACCOUNT_STATUS, DECISIONS, LABELS, LIMIT_CHANGES
from policies.processor import DEAD_LETTER, INPUT_TOPICS, REKEYED
from streams.codec import TOPIC_KINDS

__all__ = [
    "ACTIONS",
    "AGENT_STAGES",
    "DEAD_LETTER_REASONS",
    "DEAD_LETTER_TOPICS",
    "DECISION_LATENCY_BUCKETS",
    "DUPLICATE_CAUSES",
    "FALLBACK_REASONS",
    "FAUST_PREFIX",
    "LABEL_VALUES",
    "OTHER",
    "OUTPUT_TOPICS",
    "PROCESSING_BUCKETS",
    "SEND_LATENCY_BUCKETS",
    "SENT_RECORDS",
    "SNAPSHOT_REFUSALS",
    "ClosedCounter",
    "Metrics",
    "closed_label",
]

#: The value a label taken from input gets when it is outside its closed set.
OTHER: Final = "other"

#: Every decision action of the policy (label ``action`` of ``limitstream_decisions_total``).
ACTIONS: Final = (
    "OPEN",
    "RAISE",
    "CUT",
    "SUSPEND",
    "REINSTATE",
    "PROMOTE",
    "RESTORE",
    "RELAPSE",
    "FREEZE",
    "UNFREEZE",
    "SET_LIMIT",
    "CLOSE",
    "HOLD",
)
#: Where an agent can fail (label ``stage`` of ``limitstream_agent_errors_total``).
AGENT_STAGES: Final = ("decode", "process", "send", "timer")
#: Why the rules decided instead of the model (label ``reason`` of the fallback counter).
FALLBACK_REASONS: Final = ("MODEL_COLD", "MODEL_BELOW_FLOOR", "MODEL_DRIFT")
#: ``offset``: a replay after a crash (offset at or below the one kept in the user's state);
#: ``event_id``: the producer sent the same event twice.
DUPLICATE_CAUSES: Final = ("offset", "event_id")
#: The delayed label of an installment: "0" paid by the due date, "1" went overdue.
LABEL_VALUES: Final = ("0", "1")
#: The ``topic`` of a dead letter: the logical input topic, the re-key topic when a re-keyed
#: record names no valid source (its header is input: anything else is ``other``).
DEAD_LETTER_TOPICS: Final = (*INPUT_TOPICS, REKEYED)
#: Every code a dead letter can carry: ``BadInput`` codes (streams/codec.py,
#: policies/processor.py, agents/user_agent.py) and the policy's ``CommandRejected`` codes
#: (policies/decide.py).
#: tests/unit/test_metrics.py finds every code raised in the sources and checks it is here.
DEAD_LETTER_REASONS: Final = (
    "account_closed",
    "account_frozen",
    "bad_format",
    "bad_rekey_source",
    "conflicting_duplicate",
    "empty_field",
    "empty_message",
    "limit_out_of_bounds",
    "malformed_json",
    "missing_field",
    "not_an_object",
    "not_finite",
    "out_of_range",
    "oversized",
    "oversized_key",
    "processing_error",
    "processing_failed",
    "too_long",
    "ts_in_future",
    "unknown_kind",
    "unknown_operator",
    "wrong_currency",
    "wrong_type",
)
#: Why a model snapshot is refused (``SnapshotRejected.reason``, policies/snapshot.py);
#: tests/unit/test_metrics.py checks every reason raised in the sources is here.
SNAPSHOT_REFUSALS: Final = (
    "no_key",
    "oversize",
    "bad_format",
    "bad_mac",
    "bad_payload",
    "bad_state",
    "key_mismatch",
    "version_mismatch",
)
#: The logical topics the user agent writes (``Output.topic``): decisions, the dead letters,
#: the re-keyed inputs and the trainer's labels.
OUTPUT_TOPICS: Final = (LIMIT_CHANGES, ACCOUNT_STATUS, DECISIONS, DEAD_LETTER, REKEYED, LABELS)
#: Why the ordering let a record go early (label ``cause`` of ``limitstream_order_forced_total``).
ORDER_FORCED_CAUSES: Final = ("idle_timeout", "buffer_cap")
#: What a batch waits for in turn (label ``what`` of the send series): its outputs, then the
#: changelog records of its users' states.
SENT_RECORDS: Final = ("outputs", "states")

#: Input produced (Kafka record timestamp) → output sent. 1 ms .. 10 s, with 50 ms (the p99
#: target the alert uses) as a bucket boundary so that histogram_quantile is exact there.
DECISION_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Pure-core time per event: FINDINGS measures the core's pieces in µs (decode 0.4 µs, model
#: 3-30 µs), so the default 5 ms..10 s buckets would put everything in the first one.
PROCESSING_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)

#: A batch's sends until their delivery, 0.5 ms .. 30 s: from a loopback broker to a leader
#: election on a real cluster. 0.05 (the decision latency alert's target) is a boundary.
SEND_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Prefix of Faust's framework series. Fixed rather than the app id (Faust's default) so that
#: dashboards and alerts do not depend on ``LIMITSTREAM_APP_ID`` or a test's unique app name.
FAUST_PREFIX: Final = "faust"


def closed_label(value: object, allowed: Iterable[str]) -> str:
    """``value`` as a label value if it is one of ``allowed``, else ``other``.

    >>> closed_label("transactions", DEAD_LETTER_TOPICS), closed_label("x" * 99, ("a",))
    ('transactions', 'other')
    """
    text = str(value)
    return text if text in allowed else OTHER


class ClosedCounter(Counter):
    """A labelled counter whose label values are mapped onto closed sets by :meth:`labels`
    (unknown → ``other``), so a call site that passes a value taken from input needs no
    mapping of its own. Build it with :meth:`create`, which also pre-initialises every
    combination of the closed sets at 0."""

    #: label name -> its allowed values; a label not listed here is taken as given.
    closed: Mapping[str, frozenset[str]] = {}

    @classmethod
    def create(cls, name: str, documentation: str, closed: Mapping[str, Iterable[str]],
               registry: CollectorRegistry) -> ClosedCounter:
        values = {label: tuple(allowed) for label, allowed in closed.items()}
        counter = cls(name, documentation, list(values), registry=registry)
        counter.closed = {label: frozenset(allowed) for label, allowed in values.items()}
        for combination in product(*values.values()):
            counter.labels(*combination)
        return counter

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> ClosedCounter:
        if labelvalues:
            labelkwargs = dict(zip(self._labelnames, labelvalues, strict=True))
        mapped = {k: closed_label(v, self.closed[k]) if k in self.closed else v
                  for k, v in labelkwargs.items()}
        return super().labels(**mapped)


@dataclass(frozen=True, slots=True)
class Metrics:
    """The bundle of limitstream's own series. Build it with :meth:`create`."""

    registry: CollectorRegistry
    #: Inputs applied to a user's state, by source topic and event kind.
    events: Counter
    #: Inputs sent to dead-letter, by source topic and BadInput code.
    dead_letters: Counter
    #: Inputs dropped as already applied, by topic and cause (see ``DUPLICATE_CAUSES``).
    duplicates: Counter
    #: Inputs that arrived under a key other than their ``user_id`` and were re-keyed.
    rekeyed: Counter
    #: Events older than the feature horizon (counted, not applied to the windows).
    late_events: Counter
    #: Kafka record timestamp of the input → the output sent, seconds.
    decision_latency: Histogram
    #: Pure-core time per event, seconds, by topic.
    processing: Histogram
    #: End offset minus the group's committed offset, per input partition this worker owns
    #: (agents/worker.py ``refresh_lag``). Revoked partitions' label sets are removed: a stale
    #: series would be added to the new owner's in the ``sum by (topic)`` of the alerts.
    consumer_lag: Gauge
    #: Seconds behind, per owned input partition: now less the Kafka timestamp of the newest
    #: record applied, while records wait behind it; 0 when the partition is caught up.
    consumer_lag_seconds: Gauge
    #: End offset minus the group's committed offset for *every* input partition, owned or
    #: not, as this worker reads it from the broker: the lag of a dead worker's partitions.
    group_lag: Gauge
    #: Input partitions this worker owns, per topic.
    assigned_partitions: Gauge
    #: Partitions of each input topic (from the broker's metadata).
    topic_partitions: Gauge
    #: Per owned input partition, seconds its committed offset has not advanced while records
    #: wait behind it (0 when it advanced or the partition is caught up).
    commit_stalled_seconds: Gauge
    #: Offset commits the broker refused (Faust drops such a commit after a rebalance; any
    #: other commit error stops the worker, which /healthz then reports).
    commit_failures: Counter
    #: Records the user agent sent, by logical output topic.
    outputs_sent: Counter
    #: A batch's sends until every one is delivered, by what was sent (``SENT_RECORDS``).
    send_latency: Histogram
    #: Batches whose sends failed (retried whole), by what was sent.
    send_errors: Counter
    #: Users held by this worker's active partitions.
    table_users: Gauge
    #: Rebalances this worker went through.
    rebalances: Counter
    #: Exceptions caught by an agent's or timer's catch-all, by stage.
    agent_errors: Counter
    #: Decisions taken, by action.
    decisions: Counter
    #: Users of this worker's active partitions by status and probation stage ("" when the
    #: status has no stage).
    users_by_status: Gauge
    #: Sum of the limits of this worker's users, minor units.
    limit_extended: Gauge
    #: Delayed labels sent to the trainer, by label value.
    labels_emitted: Counter
    #: Pending label snapshots dropped without an outcome (user closed, state bound).
    labels_expired: Counter
    #: Label snapshots waiting for their installment's outcome on this worker.
    pending_labels: Gauge
    #: Labels the trainer's model learnt.
    labels_learned: Counter
    #: 1 for the model version served now (labels version, source); old label sets removed.
    model_info: Gauge
    #: Rolling ROC AUC of the served model.
    model_roc_auc: Gauge
    #: Rolling log loss of the served model.
    model_log_loss: Gauge
    #: Rolling ROC AUC of the served model per label segment (NaN: undefined).
    model_segment_roc_auc: Gauge
    #: Labels the served model's trainer scored per label segment.
    model_segment_labels: Gauge
    #: Times the drift detector fired.
    drift_detections: Counter
    #: Model snapshots read from the broker and served.
    snapshots_loaded: Counter
    #: Model snapshots refused, by reason (bad HMAC, unreadable, older version, ...).
    snapshots_refused: Counter
    #: Decisions taken on the rules alone, by reason (see ``FALLBACK_REASONS``).
    fallback_decisions: Counter
    #: 1 when the worker is ready (partitions assigned, tables recovered, not rebalancing).
    ready: Gauge
    # -- event-time order and liveness of the user agent (issues 15, 16) --
    #: Events applied after a later event of their user (late beyond the ordering bound).
    out_of_order_events: Counter
    #: Records the ordering let go before an earlier one could arrive, by cause
    #: (``idle_timeout``: a partition waited for past LIMITSTREAM_MAX_IDLE_MS; ``buffer_cap``).
    order_forced: Counter
    #: Records held for event-time ordering (not yet applied, not acked).
    order_buffered: Gauge
    #: 1 when this worker owns no input partition (more workers than partitions): ready, idle.
    no_partitions: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        """Define every series on ``registry`` (never the global one)."""
        metrics = cls(
            registry=registry,
            events=Counter(
                "limitstream_events_total",
                "Inputs applied to a user's state",
                ["topic", "kind"],
                registry=registry,
            ),
            dead_letters=ClosedCounter.create(
                "limitstream_dead_letters_total",
                "Inputs sent to dead-letter, by BadInput code",
                {"topic": DEAD_LETTER_TOPICS, "reason": DEAD_LETTER_REASONS},
                registry=registry,
            ),
            duplicates=ClosedCounter.create(
                "limitstream_duplicates_total",
                "Inputs dropped as already applied (offset replay or duplicate event_id)",
                {"topic": INPUT_TOPICS, "cause": DUPLICATE_CAUSES},
                registry=registry,
            ),
            rekeyed=ClosedCounter.create(
                "limitstream_rekeyed_total",
                "Inputs re-keyed by user_id because they arrived under another key",
                {"topic": INPUT_TOPICS},
                registry=registry,
            ),
            late_events=Counter(
                "limitstream_late_events_total",
                "Events older than the feature horizon",
                registry=registry,
            ),
            decision_latency=Histogram(
                "limitstream_decision_latency_seconds",
                "Input produced (Kafka record timestamp) to output sent",
                buckets=DECISION_LATENCY_BUCKETS,
                registry=registry,
            ),
            processing=Histogram(
                "limitstream_processing_seconds",
                "Pure-core processing time per event",
                ["topic"],
                buckets=PROCESSING_BUCKETS,
                registry=registry,
            ),
            consumer_lag=Gauge(
                "limitstream_consumer_lag",
                "Messages behind the end of an owned input partition (committed offsets)",
                ["topic", "partition"],
                registry=registry,
            ),
            consumer_lag_seconds=Gauge(
                "limitstream_consumer_lag_seconds",
                "Seconds the newest applied record of an owned partition is behind now, "
                "while records wait",
                ["topic", "partition"],
                registry=registry,
            ),
            group_lag=Gauge(
                "limitstream_group_lag",
                "Messages behind the end of every input partition (the group's committed "
                "offsets), owned or not",
                ["topic", "partition"],
                registry=registry,
            ),
            assigned_partitions=Gauge(
                "limitstream_assigned_partitions",
                "Input partitions this worker owns",
                ["topic"],
                registry=registry,
            ),
            topic_partitions=Gauge(
                "limitstream_topic_partitions",
                "Partitions of the input topic",
                ["topic"],
                registry=registry,
            ),
            commit_stalled_seconds=Gauge(
                "limitstream_commit_stalled_seconds",
                "Seconds the committed offset has not advanced while records wait",
                ["topic", "partition"],
                registry=registry,
            ),
            commit_failures=Counter(
                "limitstream_commit_failures_total",
                "Offset commits the broker refused",
                registry=registry,
            ),
            outputs_sent=ClosedCounter.create(
                "limitstream_outputs_sent_total",
                "Records the user agent sent, by logical output topic",
                {"topic": OUTPUT_TOPICS},
                registry=registry,
            ),
            send_latency=Histogram(
                "limitstream_send_latency_seconds",
                "A batch's sends until every one is delivered",
                ["what"],
                buckets=SEND_LATENCY_BUCKETS,
                registry=registry,
            ),
            send_errors=ClosedCounter.create(
                "limitstream_send_errors_total",
                "Batches whose sends failed (the batch is retried whole)",
                {"what": SENT_RECORDS},
                registry=registry,
            ),
            table_users=Gauge(
                "limitstream_table_users",
                "Users held by this worker's active partitions",
                registry=registry,
            ),
            rebalances=Counter(
                "limitstream_rebalances_total",
                "Consumer-group rebalances this worker went through",
                registry=registry,
            ),
            agent_errors=Counter(
                "limitstream_agent_errors_total",
                "Exceptions caught by an agent's or a timer's catch-all",
                ["stage"],
                registry=registry,
            ),
            decisions=Counter(
                "limitstream_decisions_total",
                "Decisions taken, by action",
                ["action"],
                registry=registry,
            ),
            users_by_status=Gauge(
                "limitstream_users",
                "Users of this worker's active partitions by status and probation stage",
                ["status", "stage"],
                registry=registry,
            ),
            limit_extended=Gauge(
                "limitstream_limit_extended_minor_units",
                "Sum of the credit limits of this worker's users, minor units",
                registry=registry,
            ),
            labels_emitted=Counter(
                "limitstream_labels_emitted_total",
                "Delayed labels sent to the trainer",
                ["label"],
                registry=registry,
            ),
            labels_expired=Counter(
                "limitstream_labels_expired_total",
                "Pending label snapshots dropped without an outcome",
                registry=registry,
            ),
            pending_labels=Gauge(
                "limitstream_pending_labels",
                "Label snapshots waiting for their installment's outcome",
                registry=registry,
            ),
            labels_learned=Counter(
                "limitstream_model_labels_learned_total",
                "Labels the risk model learnt",
                registry=registry,
            ),
            model_info=Gauge(
                "limitstream_model_info",
                "1 for the risk model version served now",
                ["version", "source"],
                registry=registry,
            ),
            model_roc_auc=Gauge(
                "limitstream_model_roc_auc",
                "Rolling ROC AUC of the served risk model",
                registry=registry,
            ),
            model_log_loss=Gauge(
                "limitstream_model_log_loss",
                "Rolling log loss of the served risk model",
                registry=registry,
            ),
            # Per label segment (policies/scorer.SEGMENTS): the global AUC can hide a model
            # that fails thin files, and arrears-at-issue labels are judged but never learnt.
            model_segment_roc_auc=Gauge(
                "limitstream_model_segment_roc_auc",
                "Rolling ROC AUC of the served risk model per label segment (NaN: undefined)",
                ["segment"],
                registry=registry,
            ),
            model_segment_labels=Gauge(
                "limitstream_model_segment_labels",
                "Labels scored per label segment by the trainer of the served model",
                ["segment"],
                registry=registry,
            ),
            drift_detections=Counter(
                "limitstream_model_drift_detections_total",
                "Times the drift detector fired",
                registry=registry,
            ),
            snapshots_loaded=Counter(
                "limitstream_model_snapshots_loaded_total",
                "Model snapshots read from the broker and served",
                registry=registry,
            ),
            snapshots_refused=ClosedCounter.create(
                "limitstream_model_snapshots_refused_total",
                "Model snapshots refused",
                {"reason": SNAPSHOT_REFUSALS},
                registry=registry,
            ),
            fallback_decisions=Counter(
                "limitstream_fallback_decisions_total",
                "Decisions taken on the rules alone, by fallback reason",
                ["reason"],
                registry=registry,
            ),
            ready=Gauge(
                "limitstream_ready",
                "1 when the worker is ready to serve",
                registry=registry,
            ),
            # -- event-time order and liveness of the user agent (issues 15, 16) --
            out_of_order_events=Counter(
                "limitstream_out_of_order_events_total",
                "Events applied after a later event of their user (late beyond the bound)",
                registry=registry,
            ),
            order_forced=Counter(
                "limitstream_order_forced_total",
                "Records applied before an earlier one could arrive, by cause",
                ["cause"],
                registry=registry,
            ),
            order_buffered=Gauge(
                "limitstream_order_buffered",
                "Records held for event-time ordering (not yet applied)",
                registry=registry,
            ),
            no_partitions=Gauge(
                "limitstream_no_partitions",
                "1 when this worker owns no input partition (ready, idle)",
                registry=registry,
            ),
        )
        metrics._initialise_known_labels()
        # The standard collectors the default registry would have: process_* (resident
        # memory against the pod limit, CPU, open files), python_gc_* and python_info.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        return metrics

    def _initialise_known_labels(self) -> None:
        # A labelled series does not exist until its first use; create the closed sets now so
        # that the first increment is visible to rate()/increase() and panels show 0.
        for action in ACTIONS:
            self.decisions.labels(action=action)
        for stage in AGENT_STAGES:
            self.agent_errors.labels(stage=stage)
        for reason in FALLBACK_REASONS:
            self.fallback_decisions.labels(reason=reason)
        for label in LABEL_VALUES:
            self.labels_emitted.labels(label=label)
        for topic, kinds in TOPIC_KINDS.items():
            for kind in kinds:
                self.events.labels(topic=topic, kind=kind)
            self.processing.labels(topic=topic)
        for what in SENT_RECORDS:
            self.send_latency.labels(what=what)
        for cause in ORDER_FORCED_CAUSES:
            self.order_forced.labels(cause=cause)
        # (The ClosedCounters initialise their own closed sets.)

    def set_model(self, version: str, source: str) -> None:
        """Mark ``version`` (from ``source``, e.g. "trainer", "snapshot", "cold") as served.

        The new label set is written before the old ones are removed, so a scrape never sees
        no model at all.
        """
        self.model_info.labels(version=version, source=source).set(1)
        for family in self.model_info.collect():
            for sample in family.samples:
                labels = (sample.labels["version"], sample.labels["source"])
                if labels != (version, source):
                    self.model_info.remove(*labels)

    def observe_decision_latency(self, produced_ms: int, sent_s: float) -> None:
        """Observe input produced (Kafka timestamp, epoch ms) → output sent (epoch seconds).

        Producer and worker clocks differ; a negative difference is clock skew, observed as 0.
        """
        self.decision_latency.observe(max(0.0, sent_s - produced_ms / 1000.0))

    def observe_delivery(self, what: str, seconds: float,
                         sent: Mapping[str, int] | None = None) -> None:
        """Observe one batch's delivery of ``what`` (``outputs`` or ``states``), ``seconds``
        from its first send to the last acknowledgement; ``sent``: records per logical
        output topic (outputs only: the states are counted by the changelog's own topic)."""
        self.send_latency.labels(what=what).observe(seconds)
        for topic, n in (sent or {}).items():
            self.outputs_sent.labels(topic=topic).inc(n)
