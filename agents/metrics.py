"""Every Prometheus series limitstream exports, defined in one place (STYLE habit 7).

:class:`Metrics` is one bundle, built once per app by :meth:`Metrics.create` on a
:class:`~prometheus_client.CollectorRegistry` that the caller owns and injects; the agents
receive the bundle, never a module-level metric. Tests build it on a fresh registry, so an app
built twice in one process never meets prometheus-client's "Duplicated timeseries" error (the
global ``REGISTRY`` is never used here).

Rules every series follows:

* ``user_id`` is never a label (unbounded cardinality); per-user facts are aggregated into
  gauges of this worker's active partitions.
* Label values come from closed sets (topics, reason codes, actions, statuses, stages); the
  closed sets that are known here are pre-initialised to 0 so that ``rate()``/``increase()``
  see the first increment and dashboards show a 0 instead of "no data".
* Durations are in seconds (Prometheus convention); money in integer minor units.

The framework-level series (messages in, sends, commits, rebalances, table operations, ...)
come from Faust's own :class:`~faust.sensors.prometheus.PrometheusMonitor`, installed on the
same registry by :func:`agents.faust_monitor.install_faust_monitor` under the fixed
``faust_`` prefix.

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

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ACTIONS",
    "AGENT_STAGES",
    "DECISION_LATENCY_BUCKETS",
    "DUPLICATE_CAUSES",
    "FALLBACK_REASONS",
    "FAUST_PREFIX",
    "LABEL_VALUES",
    "PROCESSING_BUCKETS",
    "Metrics",
]

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

#: Prefix of Faust's framework series. Fixed rather than the app id (Faust's default) so that
#: dashboards and alerts do not depend on ``LIMITSTREAM_APP_ID`` or a test's unique app name.
FAUST_PREFIX: Final = "faust"


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
    #: End offset minus processed offset, per assigned topic partition. Remove the label sets
    #: of revoked partitions on a rebalance (``consumer_lag.clear()``): a stale series would be
    #: added to the new owner's in the ``sum by (topic)`` of the dashboard and the alert.
    consumer_lag: Gauge
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
            dead_letters=Counter(
                "limitstream_dead_letters_total",
                "Inputs sent to dead-letter, by BadInput code",
                ["topic", "reason"],
                registry=registry,
            ),
            duplicates=Counter(
                "limitstream_duplicates_total",
                "Inputs dropped as already applied (offset replay or duplicate event_id)",
                ["topic", "cause"],
                registry=registry,
            ),
            rekeyed=Counter(
                "limitstream_rekeyed_total",
                "Inputs re-keyed by user_id because they arrived under another key",
                ["topic"],
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
                "Messages behind the end of the partition",
                ["topic", "partition"],
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
            snapshots_refused=Counter(
                "limitstream_model_snapshots_refused_total",
                "Model snapshots refused",
                ["reason"],
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
        )
        metrics._initialise_known_labels()
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
