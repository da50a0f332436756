"""The metrics bundle: one definition of every series, on an injected registry."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents.metrics import (
    ACTIONS,
    AGENT_STAGES,
    DEAD_LETTER_REASONS,
    DEAD_LETTER_TOPICS,
    DUPLICATE_CAUSES,
    FALLBACK_REASONS,
    OTHER,
    OUTPUT_TOPICS,
    SENT_RECORDS,
    SNAPSHOT_REFUSALS,
    Metrics,
)
from policies.processor import INPUT_TOPICS

#: The attribute → series name contract other modules and the dashboards rely on.
Series = Counter | Gauge | Histogram
EXPECTED: dict[str, tuple[type[Series], str, tuple[str, ...]]] = {
    "events": (Counter, "limitstream_events_total", ("topic", "kind")),
    "dead_letters": (Counter, "limitstream_dead_letters_total", ("topic", "reason")),
    "duplicates": (Counter, "limitstream_duplicates_total", ("topic", "cause")),
    "rekeyed": (Counter, "limitstream_rekeyed_total", ("topic",)),
    "late_events": (Counter, "limitstream_late_events_total", ()),
    "decision_latency": (Histogram, "limitstream_decision_latency_seconds", ()),
    "processing": (Histogram, "limitstream_processing_seconds", ("topic",)),
    "consumer_lag": (Gauge, "limitstream_consumer_lag", ("topic", "partition")),
    "table_users": (Gauge, "limitstream_table_users", ()),
    "rebalances": (Counter, "limitstream_rebalances_total", ()),
    "agent_errors": (Counter, "limitstream_agent_errors_total", ("stage",)),
    "decisions": (Counter, "limitstream_decisions_total", ("action",)),
    "users_by_status": (Gauge, "limitstream_users", ("status", "stage")),
    "limit_extended": (Gauge, "limitstream_limit_extended_minor_units", ()),
    "labels_emitted": (Counter, "limitstream_labels_emitted_total", ("label",)),
    "labels_expired": (Counter, "limitstream_labels_expired_total", ()),
    "pending_labels": (Gauge, "limitstream_pending_labels", ()),
    "labels_learned": (Counter, "limitstream_model_labels_learned_total", ()),
    "model_info": (Gauge, "limitstream_model_info", ("version", "source")),
    "model_roc_auc": (Gauge, "limitstream_model_roc_auc", ()),
    "model_log_loss": (Gauge, "limitstream_model_log_loss", ()),
    "model_segment_roc_auc": (Gauge, "limitstream_model_segment_roc_auc", ("segment",)),
    "model_segment_labels": (Gauge, "limitstream_model_segment_labels", ("segment",)),
    "drift_detections": (Counter, "limitstream_model_drift_detections_total", ()),
    "snapshots_loaded": (Counter, "limitstream_model_snapshots_loaded_total", ()),
    "snapshots_refused": (Counter, "limitstream_model_snapshots_refused_total", ("reason",)),
    "fallback_decisions": (Counter, "limitstream_fallback_decisions_total", ("reason",)),
    "ready": (Gauge, "limitstream_ready", ()),
    "consumer_lag_seconds": (Gauge, "limitstream_consumer_lag_seconds", ("topic", "partition")),
    "group_lag": (Gauge, "limitstream_group_lag", ("topic", "partition")),
    "assigned_partitions": (Gauge, "limitstream_assigned_partitions", ("topic",)),
    "topic_partitions": (Gauge, "limitstream_topic_partitions", ("topic",)),
    "commit_stalled_seconds": (Gauge, "limitstream_commit_stalled_seconds",
                               ("topic", "partition")),
    "commit_failures": (Counter, "limitstream_commit_failures_total", ()),
    "outputs_sent": (Counter, "limitstream_outputs_sent_total", ("topic",)),
    "send_latency": (Histogram, "limitstream_send_latency_seconds", ("what",)),
    "send_errors": (Counter, "limitstream_send_errors_total", ("what",)),
    "out_of_order_events": (Counter, "limitstream_out_of_order_events_total", ()),
    "order_forced": (Counter, "limitstream_order_forced_total", ("cause",)),
    "order_buffered": (Gauge, "limitstream_order_buffered", ()),
    "no_partitions": (Gauge, "limitstream_no_partitions", ()),
}


def exposed_name(metric: Series) -> str:
    # prometheus-client keeps a counter's name without "_total" and adds it on exposition.
    name: str = metric._name
    return name + "_total" if isinstance(metric, Counter) else name


def test_every_series_is_defined_with_its_name_type_and_labels() -> None:
    metrics = Metrics.create(CollectorRegistry())
    fields = {f.name for f in dataclasses.fields(Metrics)} - {"registry"}
    assert fields == set(EXPECTED)
    for attr, (kind, name, labels) in EXPECTED.items():
        metric: Series = getattr(metrics, attr)
        assert isinstance(metric, kind), attr
        assert exposed_name(metric) == name, attr
        assert tuple(metric._labelnames) == labels, attr


def test_no_series_is_labelled_by_user() -> None:
    metrics = Metrics.create(CollectorRegistry())
    for attr in EXPECTED:
        assert "user_id" not in getattr(metrics, attr)._labelnames
        assert "user" not in getattr(metrics, attr)._labelnames


def test_two_bundles_on_fresh_registries_do_not_collide() -> None:
    first_registry, second_registry = CollectorRegistry(), CollectorRegistry()
    first = Metrics.create(first_registry)
    second = Metrics.create(second_registry)

    first.events.labels(topic="transactions", kind="purchase").inc()
    first.events.labels(topic="transactions", kind="purchase").inc()
    second.events.labels(topic="transactions", kind="purchase").inc()
    first.dead_letters.labels(topic="repayments", reason="malformed_json").inc()
    second.duplicates.labels(topic="transactions", cause="offset").inc(3)
    first.decisions.labels(action="RAISE").inc()
    first.ready.set(1)
    first.limit_extended.set(1_500_000)
    first.users_by_status.labels(status="PROBATION", stage="2").set(7)
    first.consumer_lag.labels(topic="transactions", partition="3").set(42)

    def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    events = "limitstream_events_total"
    assert value(first_registry, events, topic="transactions", kind="purchase") == 2.0
    assert value(second_registry, events, topic="transactions", kind="purchase") == 1.0
    assert (
        value(
            first_registry,
            "limitstream_dead_letters_total",
            topic="repayments",
            reason="malformed_json",
        )
        == 1.0
    )
    assert (
        value(second_registry, "limitstream_duplicates_total", topic="transactions", cause="offset")
        == 3.0
    )
    assert value(first_registry, "limitstream_decisions_total", action="RAISE") == 1.0
    assert value(second_registry, "limitstream_decisions_total", action="RAISE") == 0.0
    assert value(first_registry, "limitstream_ready") == 1.0
    assert value(second_registry, "limitstream_ready") == 0.0
    assert value(first_registry, "limitstream_limit_extended_minor_units") == 1_500_000
    assert value(first_registry, "limitstream_users", status="PROBATION", stage="2") == 7.0
    assert (
        value(first_registry, "limitstream_consumer_lag", topic="transactions", partition="3")
        == 42.0
    )


def test_building_twice_on_one_registry_fails_loudly() -> None:
    # The reason the bundle is injected: a second definition on the same registry raises.
    registry = CollectorRegistry()
    Metrics.create(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics.create(registry)


def test_closed_label_sets_exist_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    for action in ACTIONS:
        assert registry.get_sample_value("limitstream_decisions_total", {"action": action}) == 0
    for stage in AGENT_STAGES:
        assert registry.get_sample_value("limitstream_agent_errors_total", {"stage": stage}) == 0
    for reason in FALLBACK_REASONS:
        fallback = "limitstream_fallback_decisions_total"
        assert registry.get_sample_value(fallback, {"reason": reason}) == 0
    for label in ("0", "1"):
        emitted = "limitstream_labels_emitted_total"
        assert registry.get_sample_value(emitted, {"label": label}) == 0


def test_histograms_have_the_latency_target_and_small_processing_buckets() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    metrics.decision_latency.observe(0.049)
    metrics.decision_latency.observe(0.051)
    metrics.processing.labels(topic="transactions").observe(0.000_03)

    latency = "limitstream_decision_latency_seconds_bucket"
    assert registry.get_sample_value(latency, {"le": "0.001"}) == 0
    assert registry.get_sample_value(latency, {"le": "0.05"}) == 1
    assert registry.get_sample_value(latency, {"le": "10.0"}) == 2
    processing = "limitstream_processing_seconds_bucket"
    assert registry.get_sample_value(processing, {"topic": "transactions", "le": "1e-05"}) == 0
    assert registry.get_sample_value(processing, {"topic": "transactions", "le": "5e-05"}) == 1
    assert registry.get_sample_value(processing, {"topic": "transactions", "le": "0.1"}) == 1


def test_observe_decision_latency_clamps_clock_skew() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    metrics.observe_decision_latency(produced_ms=1_000_000, sent_s=1_000.020)
    metrics.observe_decision_latency(produced_ms=1_000_500, sent_s=1_000.0)  # producer ahead
    total = registry.get_sample_value("limitstream_decision_latency_seconds_sum")
    assert total == pytest.approx(0.020)
    assert registry.get_sample_value("limitstream_decision_latency_seconds_count") == 2


def test_set_model_keeps_only_the_served_version() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    info = "limitstream_model_info"

    metrics.set_model("cold", "rules")
    metrics.set_model("abc123", "trainer")
    assert registry.get_sample_value(info, {"version": "abc123", "source": "trainer"}) == 1
    assert registry.get_sample_value(info, {"version": "cold", "source": "rules"}) is None

    metrics.set_model("def456", "snapshot")
    metrics.set_model("def456", "snapshot")  # idempotent
    samples = [s for f in metrics.model_info.collect() for s in f.samples]
    assert [(s.labels["version"], s.labels["source"], s.value) for s in samples] == [
        ("def456", "snapshot", 1.0)
    ]


# -- label hygiene, closed sets at 0, the standard collectors ----------------------------------

ROOT = Path(__file__).resolve().parents[2]


def raised_codes() -> set[str]:
    """Every code the sources give a ``BadInput`` or a ``CommandRejected``."""
    codes: set[str] = set()
    for package in ("streams", "policies", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            codes |= set(re.findall(r"(?:BadInput|CommandRejected)\(\s*\"([a-z_]+)\"", text))
    return codes


def test_every_dead_letter_code_of_the_sources_is_in_the_closed_set() -> None:
    codes = raised_codes()
    assert {"malformed_json", "wrong_currency", "unknown_operator"} <= codes  # the scan works
    assert codes - set(DEAD_LETTER_REASONS) == set()


def test_every_snapshot_refusal_of_the_sources_is_in_the_closed_set() -> None:
    text = (ROOT / "policies" / "snapshot.py").read_text()
    reasons = set(re.findall(r"(?:SnapshotRejected\(|fail\()\s*\"([a-z_]+)\"", text))
    assert {"bad_mac", "version_mismatch"} <= reasons  # the scan works
    assert reasons - set(SNAPSHOT_REFUSALS) == set()


def test_labels_taken_from_input_are_mapped_to_their_closed_set() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    # A re-keyed record's source header is input: whatever it says becomes "other".
    metrics.dead_letters.labels(topic="evil-\u00e9" * 40, reason="bad_rekey_source").inc()
    metrics.dead_letters.labels("transactions", "no_such_code").inc(2)
    metrics.snapshots_refused.labels(reason="made_up").inc()
    metrics.outputs_sent.labels(topic="decisions").inc(3)
    dead = "limitstream_dead_letters_total"
    assert registry.get_sample_value(dead, {"topic": OTHER, "reason": "bad_rekey_source"}) == 1
    assert registry.get_sample_value(dead, {"topic": "transactions", "reason": OTHER}) == 2
    refused = "limitstream_model_snapshots_refused_total"
    assert registry.get_sample_value(refused, {"reason": OTHER}) == 1
    assert registry.get_sample_value("limitstream_outputs_sent_total", {"topic": "decisions"}) == 3
    topics = {s.labels["topic"] for f in metrics.dead_letters.collect() for s in f.samples}
    assert topics == {*DEAD_LETTER_TOPICS, OTHER}


def test_every_closed_set_of_an_incident_counter_exists_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    for topic, reason in itertools.product(DEAD_LETTER_TOPICS, DEAD_LETTER_REASONS):
        labels = {"topic": topic, "reason": reason}
        assert registry.get_sample_value("limitstream_dead_letters_total", labels) == 0
    for topic, cause in itertools.product(INPUT_TOPICS, DUPLICATE_CAUSES):
        labels = {"topic": topic, "cause": cause}
        assert registry.get_sample_value("limitstream_duplicates_total", labels) == 0
    for topic in INPUT_TOPICS:
        assert registry.get_sample_value("limitstream_rekeyed_total", {"topic": topic}) == 0
    for reason in SNAPSHOT_REFUSALS:
        refused = "limitstream_model_snapshots_refused_total"
        assert registry.get_sample_value(refused, {"reason": reason}) == 0
    for topic in OUTPUT_TOPICS:
        assert registry.get_sample_value("limitstream_outputs_sent_total", {"topic": topic}) == 0
    for what in SENT_RECORDS:
        assert registry.get_sample_value("limitstream_send_errors_total", {"what": what}) == 0
        assert registry.get_sample_value(
            "limitstream_send_latency_seconds_count", {"what": what}) == 0


def test_observe_delivery_counts_outputs_by_topic_and_times_the_batch() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    metrics.observe_delivery("outputs", 0.004, {"decisions": 2, "dead-letter": 1})
    metrics.observe_delivery("states", 0.030)
    assert registry.get_sample_value("limitstream_outputs_sent_total",
                                     {"topic": "dead-letter"}) == 1
    latency = "limitstream_send_latency_seconds_bucket"
    assert registry.get_sample_value(latency, {"what": "outputs", "le": "0.005"}) == 1
    assert registry.get_sample_value(latency, {"what": "states", "le": "0.025"}) == 0
    assert registry.get_sample_value(latency, {"what": "states", "le": "0.05"}) == 1


def test_the_registry_has_the_process_and_gc_collectors() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    names = {family.name for family in registry.collect()}
    assert {"process_resident_memory_bytes", "process_open_fds", "python_gc_collections",
            "python_info"} <= names
    resident = registry.get_sample_value("process_resident_memory_bytes")
    assert resident is not None and resident > 0
