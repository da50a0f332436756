"""Faust's Prometheus monitor, with its per-message series read when ``/metrics`` is scraped.

Faust's :class:`~faust.sensors.prometheus.PrometheusMonitor` updates nine series for every
message (received, active, per topic, per partition offset, events, active events, per
stream, the event runtime histogram, the partition end offset): each a label lookup and a
lock. Measured on the one-worker bench (``python -m bench.throughput``), that was a fifth of
the worker's time: 5.2-5.3k events/s with those hooks against 6.4k with the base monitor's
hooks only, in paired runs.

The base :class:`~faust.sensors.monitor.Monitor` (the one every Faust app runs, the floor
included) already counts all of it in plain attributes. :class:`ScrapeTimePrometheusMonitor`
keeps Faust's per-message bookkeeping and nothing more, and :class:`PerMessageSeries` turns
those attributes into the same series — same names, types, labels and help texts — at scrape
time. Every other hook (sends, commits, rebalances, assignments, table operations, web, named
counts) is Faust's own, on the same registry. One difference, on purpose: Faust's monitor
resets ``messages_received_per_topic`` at every rebalance; here it counts since the start, as
a Prometheus counter should (``rate()`` copes with either). tests/unit/test_faust_monitor.py
drives both monitors through the same hooks and compares every sample.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import faust
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import MS_LATENCY_BUCKETS, FaustMetrics, PrometheusMonitor
from faust.types import TP, EventT, Message, StreamT
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agents.metrics import FAUST_PREFIX

#: The ``FaustMetrics`` fields that :class:`PerMessageSeries` serves instead.
PER_MESSAGE_FIELDS: Final = (
    "messages_received",
    "active_messages",
    "messages_received_per_topics",
    "messages_received_per_topics_partition",
    "events_runtime_latency",
    "total_events",
    "total_active_events",
    "total_events_per_stream",
    "topic_partition_end_offset",
)


class ScrapeTimePrometheusMonitor(PrometheusMonitor):
    """Faust's Prometheus monitor whose per-message hooks only do the base monitor's
    bookkeeping (and count the event runtime into histogram buckets, lock-free)."""

    on_message_in = Monitor.on_message_in
    on_stream_event_in = Monitor.on_stream_event_in
    track_tp_end_offset = Monitor.track_tp_end_offset

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics=metrics, **kwargs)
        #: Events per runtime bucket (ms, MS_LATENCY_BUCKETS, then +Inf) and their sum.
        self.runtime_buckets = [0] * (len(MS_LATENCY_BUCKETS) + 1)
        self.runtime_sum_ms = 0.0
        #: Per partition, the offset and Kafka timestamp (epoch seconds) of the newest record
        #: acknowledged: applied and stored, since the user agent returns only then. The
        #: time lag reads it (agents/worker.py); entries of revoked partitions linger here
        #: and are ignored by their offset.
        self.applied: dict[TP, tuple[int, float]] = {}

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        Monitor.on_message_out(self, tp, offset, message)
        self.applied[tp] = (offset, message.timestamp)

    def on_stream_event_out(self, tp: TP, offset: int, stream: StreamT[Any],
                            event: EventT[Any], state: dict[str, Any] | None = None) -> None:
        Monitor.on_stream_event_out(self, tp, offset, stream, event, state)
        if state is not None:
            ms = state["time_total"] * 1000.0
            self.runtime_buckets[bisect_left(MS_LATENCY_BUCKETS, ms)] += 1
            self.runtime_sum_ms += ms

    def stream_label(self, stream: StreamT[Any]) -> str:
        """The ``stream`` label Faust's monitor gives a stream's events."""
        return f"stream.{self._stream_label(stream)}.events"


class PerMessageSeries(Collector):
    """The per-message series of Faust's monitor, from ``monitor``'s counters at scrape
    time. Runs in the web handler, on the event loop the hooks run on."""

    def __init__(self, monitor: ScrapeTimePrometheusMonitor, prefix: str) -> None:
        self.monitor = monitor
        self.prefix = prefix

    def describe(self) -> Iterator[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, empty: bool) -> Iterator[Metric]:
        # ``empty``: the families without samples, for the registry's duplicate check.
        m, p = self.monitor, self.prefix

        def scalar(family: type[CounterMetricFamily | GaugeMetricFamily], name: str,
                   doc: str, value: float) -> Metric:
            return family(f"{p}_{name}", doc, value=None if empty else value)

        def labelled(family: type[CounterMetricFamily | GaugeMetricFamily], name: str,
                     doc: str, labels: list[str],
                     samples: Iterable[tuple[list[str], float]]) -> Metric:
            out = family(f"{p}_{name}", doc, labels=labels)
            for label_values, value in () if empty else samples:
                out.add_metric(label_values, value)
            return out

        def per_tp(name: str, doc: str, offsets: Mapping[TP, int]) -> Metric:
            return labelled(GaugeMetricFamily, name, doc, ["topic", "partition"],
                            (([tp.topic, str(tp.partition)], o) for tp, o in offsets.items()))

        def per_stream() -> Iterator[tuple[list[str], float]]:
            streams: Counter[str] = Counter()
            for stream, key in list(m.stream_lookup.items()):
                streams[m.stream_label(stream)] += m.events_by_stream.get(key, 0)
            for label, n in streams.items():
                yield [label], n

        yield scalar(CounterMetricFamily, "messages_received", "Total messages received",
                     m.messages_received_total)
        yield scalar(GaugeMetricFamily, "active_messages", "Total active messages",
                     m.messages_active)
        yield labelled(CounterMetricFamily, "messages_received_per_topic",
                       "Messages received per topic", ["topic"],
                       (([topic], n) for topic, n in m.messages_received_by_topic.items()))
        yield per_tp("messages_received_per_topics_partition",
                     "Messages received per topic/partition", m.tp_read_offsets)
        yield HistogramMetricFamily(
            f"{p}_events_runtime_ms", "Events runtime in ms",
            buckets=None if empty else self._runtime_buckets(),
            sum_value=None if empty else m.runtime_sum_ms)
        yield scalar(CounterMetricFamily, "total_events", "Total events received",
                     m.events_total)
        yield scalar(GaugeMetricFamily, "total_active_events", "Total active events",
                     m.events_active)
        yield labelled(CounterMetricFamily, "total_events_per_stream",
                       "Events received per Stream", ["stream"], per_stream())
        yield per_tp("topic_partition_end_offset", "Offset ends per topic/partition",
                     m.tp_end_offsets)

    def _runtime_buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*MS_LATENCY_BUCKETS, float("inf")), self.monitor.runtime_buckets,
                            strict=True):
            total += n
            # The "le" text prometheus-client's own Histogram writes ("5.0", "+Inf").
            le: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            out.append((le, total))
        return out


def install_faust_monitor(app: faust.App, registry: CollectorRegistry,
                          prefix: str = FAUST_PREFIX) -> ScrapeTimePrometheusMonitor:
    """Make Faust's own Prometheus sensor record into ``registry``.

    The equivalent of :func:`faust.sensors.prometheus.setup_prometheus_sensors` without its two
    drawbacks here: it defaults to the global registry and adds a second ``/metrics`` page
    (limitstream serves ``/metrics`` once, from the shared registry); and with the
    per-message series served at scrape time (see the module). Call it before the worker
    starts: Faust attaches ``app.monitor`` to its sensors when the app's services are set up.
    """
    metrics = FaustMetrics.create(registry, prefix)
    for name in PER_MESSAGE_FIELDS:
        registry.unregister(getattr(metrics, name))
    monitor = ScrapeTimePrometheusMonitor(metrics=metrics)
    registry.register(PerMessageSeries(monitor, prefix))
    app.monitor = monitor
    return monitor
