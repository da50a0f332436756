"""The metrics bundle: one definition of every series, on an injected registry."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents.metrics import (
    ACTIONS,
    AGENT_STAGES,
    FALLBACK_REASONS,
    Metrics,
)

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
    "drift_detections": (Counter, "limitstream_model_drift_detections_total", ()),
    "snapshots_loaded": (Counter, "limitstream_model_snapshots_loaded_total", ()),
    "snapshots_refused": (Counter, "limitstream_model_snapshots_refused_total", ("reason",)),
    "fallback_decisions": (Counter, "limitstream_fallback_decisions_total", ("reason",)),
    "ready": (Gauge, "limitstream_ready", ()),
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
