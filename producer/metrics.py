"""Prometheus metrics of the producer, on a registry of its own (one per service instance).

The names are what dashboards and alerts use: frames and records per TR, decode errors and
drift, receive-to-ack latency, delivery failures, reconnects, spool depth, session state.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.session import SessionState

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)  # fmt: skip


class AckStats(Collector):
    """Receive-to-ack latency histogram and acknowledged count, updated per delivery report.

    prometheus_client's Histogram takes a lock and validates on every observation; on the
    delivery-report path (one call per message, tens of thousands per second) a bisect and
    an integer increment, read at scrape time, cost a fraction of that. One writer thread.
    """

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.acked = 0

    def observe(self, latency: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, latency)] += 1
        self.total += latency
        self.acked += 1

    def collect(self) -> Iterator[Metric]:
        cumulative, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
        histogram = HistogramMetricFamily(
            "kis_produce_latency_seconds", "Frame receive time to broker acknowledgement"
        )
        histogram.add_metric([], cumulative, self.total)
        yield histogram
        acked = CounterMetricFamily("kis_acked_messages", "Messages the broker acknowledged")
        acked.add_metric([], self.acked)
        yield acked


class TrCounts(Collector):
    """Frames and records per TR: plain integers the pipeline thread adds to, read at scrape.

    Two prometheus_client counter increments per frame (a lock each) cost more than the rest
    of the frame's bookkeeping; one writer thread needs no lock.
    """

    def __init__(self) -> None:
        self.by_tr: dict[str, list[int]] = {}

    def slot(self, tr_id: str) -> list[int]:
        """The [frames, records] counters of one TR (created at zero)."""
        counts = self.by_tr.get(tr_id)
        if counts is None:
            counts = self.by_tr[tr_id] = [0, 0]
        return counts

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily("kis_frames", "Data frames received", labels=["tr_id"])
        records = CounterMetricFamily(
            "kis_records", "Records decoded and produced", labels=["tr_id"]
        )
        for tr_id, (frame_count, record_count) in list(self.by_tr.items()):
            frames.add_metric([tr_id], frame_count)
            records.add_metric([tr_id], record_count)
        yield frames
        yield records


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.per_tr = TrCounts()
        r.register(self.per_tr)
        self.decode_errors = Counter(
            "kis_decode_errors", "Frames sent to the dead-letter topic", ["tr_id"], registry=r
        )
        self.drift = Counter(
            "kis_field_drift",
            "Records whose field count differs from the catalogue (KIS added or dropped fields)",
            ["tr_id"],
            registry=r,
        )
        self.acks = AckStats()
        r.register(self.acks)
        self.delivery_failures = Counter(
            "kis_delivery_failures", "Messages the broker refused for good", ["topic"], registry=r
        )
        self.delivery_resends = Counter(
            "kis_delivery_resends",
            "Messages failed for now (topic unknown during a broker restart, ...) and sent again",
            ["topic"],
            registry=r,
        )
        self.reconnects = Counter("kis_reconnects", "WebSocket reconnects", ["session"], registry=r)
        self.spool_depth = Gauge(
            "kis_spool_depth_records",
            "Records in the on-disk spool not yet acknowledged",
            registry=r,
        )
        self.spool_bytes = Gauge("kis_spool_bytes", "Size of the on-disk spool", registry=r)
        self.spool_already_delivered = Counter(
            "kis_spool_already_delivered",
            "Left-over spool records found in Kafka at start-up and not sent again",
            registry=r,
        )
        self.in_memory = Gauge(
            "kis_producer_queue_messages", "Messages in the producer's memory queue", registry=r
        )
        self.pipeline_backlog = Gauge(
            "kis_pipeline_backlog_frames", "Frames read but not yet decoded", registry=r
        )
        self.backpressure = Counter(
            "kis_session_backpressure_seconds",
            "Time sessions waited for room in a full backlog instead of reading (TCP backpressure)",
            registry=r,
        )
        self.session_state = Gauge(
            "kis_session_state", "1 for the current state of each session", ["session", "state"],
            registry=r,
        )  # fmt: skip
        self.gaps = Counter(
            "kis_gaps", "Gaps reported on the status topic", ["session"], registry=r
        )
        self.subscribe_refusals = Counter(
            "kis_subscribe_refusals",
            "Registration requests KIS refused, by error class (MAX_SUBSCRIBE_OVER and other "
            "transient ones are asked again; INVALID_TR_KEY is not)",
            ["session", "code"],
            registry=r,
        )

    def set_session_state(self, session: str, state: SessionState) -> None:
        for candidate in SessionState:
            self.session_state.labels(session, candidate.value).set(1 if candidate is state else 0)
