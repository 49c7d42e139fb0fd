"""`bench produce`'s measurement hooks and its reading of librdkafka's statistics."""

from __future__ import annotations

import json
from typing import Any

from producer.bench_produce import _librdkafka_latency
from producer.metrics import ProducerMetrics
from producer.pipeline import Pipeline
from tests.unit.test_session_pipeline import CATALOGUE, FakeCodec, FakeSink, frame, trade_row


def stats(rtt_p99_us: int, int_p99_us: int, count: int = 10) -> str:
    broker = {"nodeid": 1, "rtt": {"cnt": count, "p99": rtt_p99_us},
              "int_latency": {"cnt": count, "p99": int_p99_us}}  # fmt: skip
    bootstrap = {"nodeid": -1, "rtt": {"cnt": 0, "p99": 0}, "int_latency": {"p99": 0}}
    return json.dumps({"brokers": {"b1": broker, "boot": bootstrap}})


def test_librdkafka_latency_takes_each_seconds_p99_and_skips_idle_and_bootstrap_entries() -> None:
    windows = [stats(1_000, 5_000), stats(3_000, 6_000), stats(9_000, 40_000), stats(0, 0, 0)]
    result = _librdkafka_latency(windows)
    assert result == {
        "queue_p99_median": 6.0, "queue_p99_worst": 40.0,
        "rtt_p99_median": 3.0, "rtt_p99_worst": 9.0, "seconds": 3,
    }  # fmt: skip


def test_pipeline_reports_each_frames_receive_time_as_it_picks_it_up() -> None:
    picked: list[int] = []
    codec: Any = FakeCodec()
    pipeline = Pipeline(sink=FakeSink(), codec=codec, metrics=ProducerMetrics(),  # type: ignore[arg-type]
                        catalogue=CATALOGUE, on_pickup=picked.append)  # fmt: skip
    pipeline.handle_frame(("s0.r.1", 1, 1_000, frame([trade_row("005930", 71000)])))
    pipeline.handle_frame(("s0.r.1", 2, 2_000, b"garbage"))
    assert picked == [1_000, 2_000]
