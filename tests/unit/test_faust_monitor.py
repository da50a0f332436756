"""Faust's Prometheus sensor on limitstream's registry, its per-message series served at
scrape time: the same series, labels and values as Faust's own monitor gives."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import faust
import pytest
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, Message
from prometheus_client import CollectorRegistry, generate_latest

from agents.faust_monitor import PER_MESSAGE_FIELDS, install_faust_monitor
from agents.metrics import Metrics


def test_install_faust_monitor_records_into_the_given_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    app = faust.App("t", broker="kafka://127.0.0.1:1", web_enabled=False)

    def no_page(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"install_faust_monitor added a web page {args!r}")

    # No second /metrics page: the shared registry is served once, by limitstream's own view.
    monkeypatch.setattr(app, "page", no_page)

    install_faust_monitor(app, registry)

    assert isinstance(app.monitor, PrometheusMonitor)
    names = {metric.name for metric in registry.collect()}
    assert {"faust_messages_received", "faust_topic_partition_end_offset"} <= names
    # Besides ours and Faust's, only prometheus-client's standard process/GC/platform series.
    assert all(name.startswith(("faust_", "limitstream_", "process_", "python_"))
               for name in names)
    # The monitor's hooks write into our registry.
    app.monitor.count("rebalance")
    sample = registry.get_sample_value("faust_metrics_by_name", {"metric": "rebalance"})
    assert sample == 1
    text = generate_latest(registry).decode()
    assert "faust_messages_received_total" in text
    assert "limitstream_ready" in text


def test_install_faust_monitor_twice_on_one_registry_fails_loudly() -> None:
    registry = CollectorRegistry()
    install_faust_monitor(faust.App("t1", broker="kafka://127.0.0.1:1"), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        install_faust_monitor(faust.App("t2", broker="kafka://127.0.0.1:1"), registry)


class Owner:
    """Stands for the agent task owning a stream."""


def clock(step_s: float) -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def drive(monitor: PrometheusMonitor, app: faust.App) -> None:
    """Messages on two topics and three partitions through two streams, event runtimes
    across the histogram's buckets, end offsets, a rebalance that clears the partition
    series, then more messages."""
    streams = [app.stream(app.topic("t-a")), app.stream(app.topic("t-b"))]
    for stream in streams:
        stream.task_owner = Owner()  # what a started agent sets; the monitor keys on it
    for i in range(300):
        tp = TP(("t-a", "t-b")[i % 2], i % 3)
        message = Message(tp.topic, tp.partition, i, 0.0, 0, None, b"k", b"v", None, tp=tp)
        monitor.on_message_in(tp, i, message)
        monitor.track_tp_end_offset(tp, i + 10)
        stream = streams[i % 2]
        event = stream.current_event  # the hooks only pass it on
        state = monitor.on_stream_event_in(tp, i, stream, event)  # type: ignore[arg-type]
        if i % 7:  # some events still active at the scrape
            monitor.on_stream_event_out(tp, i, stream, event, state)  # type: ignore[arg-type]
            monitor.on_message_out(tp, i, message)
        if i == 200:
            monitor.on_rebalance_start(app)


def samples(registry: CollectorRegistry, names: Iterable[str]) -> dict[tuple[str, str], float]:
    wanted = set(names)
    return {(s.name, repr(sorted(s.labels.items()))): s.value
            for family in registry.collect() if family.name in wanted
            for s in family.samples if not s.name.endswith("_created")}


def test_per_message_series_equal_faust_monitors() -> None:
    stock_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    stock_metrics = FaustMetrics.create(stock_registry, "faust")
    stock = PrometheusMonitor(metrics=stock_metrics)
    app = faust.App("equal", broker="kafka://127.0.0.1:1", web_enabled=False)
    install_faust_monitor(app, ours_registry)
    ours = app.monitor
    # The same event runtimes in both: 3 ms per clock read spans several buckets.
    stock.time, ours.time = clock(0.003), clock(0.003)
    drive(stock, app)
    drive(ours, app)

    names = {family.name for name in PER_MESSAGE_FIELDS
             for family in getattr(stock_metrics, name).collect()}
    expected = samples(stock_registry, names)
    got = samples(ours_registry, names)
    # The one difference: Faust's monitor resets the per-topic counter at a rebalance; ours
    # counts since the start, as a Prometheus counter should (rate() takes either).
    per_topic = "faust_messages_received_per_topic_total"
    assert {k: v for k, v in got.items() if k[0] == per_topic} == {
        (per_topic, "[('topic', 't-a')]"): 150, (per_topic, "[('topic', 't-b')]"): 150}
    assert {k: v for k, v in expected.items() if k[0] == per_topic} == {
        (per_topic, "[('topic', 't-a')]"): 49, (per_topic, "[('topic', 't-b')]"): 50}
    assert ({k: v for k, v in got.items() if k[0] != per_topic}
            == {k: v for k, v in expected.items() if k[0] != per_topic})
    assert len(names) == len(PER_MESSAGE_FIELDS)
    # The drive reached what it is meant to compare.
    assert expected[("faust_messages_received_total", "[]")] == 300
    assert any(name == "faust_events_runtime_ms_bucket" and v not in (0, 300)
               for (name, _), v in expected.items())
    assert any(name == "faust_topic_partition_end_offset" for name, _ in expected)


def test_the_monitor_keeps_the_newest_acknowledged_record_per_partition() -> None:
    # What the time lag reads (agents/lag.py): offset and Kafka timestamp of the newest
    # record the agent acknowledged, i.e. applied and stored.
    monitor = install_faust_monitor(faust.App("t-applied", broker="kafka://127.0.0.1:1"),
                                    CollectorRegistry())
    tp = TP("transactions", 3)
    for offset, ts in ((7, 1_700_000_000.5), (8, 1_700_000_001.25)):
        message = Message(tp.topic, tp.partition, offset, ts, 0, None, b"k", b"v", None, tp=tp)
        monitor.on_message_in(tp, offset, message)
        assert monitor.applied.get(tp) != (offset, ts)  # fetched is not applied
        monitor.on_message_out(tp, offset, message)
        assert monitor.applied[tp] == (offset, ts)
    assert monitor.messages_active == 0  # Faust's own bookkeeping still runs
