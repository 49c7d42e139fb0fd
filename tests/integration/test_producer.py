"""The producer through the real broker, registry and simulator; the truth log is the oracle.

Each test runs the simulator in-process, the producer in-process (its threads), stops the
simulator first (so its truth log is complete and everything it sent is on the socket),
lets the producer drain, stops it, then reads every topic with an independent consumer.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from producer.record_file import read_recording
from producer.redecode import redecode
from tests.integration.producer_oracle import (
    Registry,
    assert_exactly_the_truth,
    kafka_by_stream,
    producer_settings,
    read_topics,
    running,
    settle,
    simulator,
    truth_by_stream,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

SYMBOLS = ("005930", "000660", "035420")
GROUPS = ["trades", "books", "program", "expected", "status"]


def all_topics(prefix: str) -> list[str]:
    from producer.catalogue import load_catalogue

    names = [prefix + "frames", prefix + "status", prefix + "dead-letter"]
    return names + [prefix + spec.tr_id.lower() for spec in load_catalogue()]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_every_record_once_in_order_with_every_field(services: Any, tmp_path: Path) -> None:
    port = _free_port()
    record_file = tmp_path / "frames.jsonl.gz"
    with simulator(tmp_path, SYMBOLS, speed=4.0) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_tr_groups=GROUPS,
            kis_venues=["KRX", "NXT", "UN"], metrics_port=port,
        )  # fmt: skip
        with running(settings, record_file=record_file) as service:
            wait_until(lambda: service.ready()[0], 30, "all sessions streaming")
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            time.sleep(8)
            sim.stop()  # truth complete; the producer keeps what was sent
            wait_until(lambda: not service.ready()[0], 10, "sessions to notice the simulator left")
            settle(service)
            status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert "kis_spool_depth_records 0.0" in metrics
            assert 'kis_frames_total{tr_id="H0STCNT0"}' in metrics
            assert "kis_produce_latency_seconds_bucket" in metrics

    registry = Registry(services.registry_url)
    messages = read_topics(services, all_topics(settings.topic_prefix), registry)
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    count = assert_exactly_the_truth(truth, kafka_by_stream(messages, settings.topic_prefix))
    assert count > 500, "too little traffic to mean anything"
    assert len({stream[0] for stream in truth}) >= 8  # trades, books, program, ... per venue

    by_topic = Counter(m.topic for m in messages)
    assert by_topic[settings.topic_prefix + "dead-letter"] == 0
    frames = [m for m in messages if m.topic == settings.topic_prefix + "frames"]
    data_frames = [m for m in frames if m.value["frame"][:1] in (b"0", b"1")]
    sent_frames = {(e["session"], e["frame"]) for s in truth.values() for e in s}
    assert len(data_frames) == len(sent_frames)
    records = [m for m in messages if m.topic.removeprefix(settings.topic_prefix)[:1] == "h"]
    frame_ids = {(m.value["session"], m.value["seq"]) for m in data_frames}
    assert {(r.value["session"], r.value["seq"]) for r in records} <= frame_ids

    events = [m.value["event"] for m in messages if m.topic == settings.topic_prefix + "status"]
    assert {"started", "connected", "subscribed", "streaming", "disconnected"} <= set(events)

    recording = read_recording(record_file)
    published = {(_micros(m.value["received_at"]), m.value["frame"].decode()) for m in frames}
    assert set(recording) == published and len(recording) == len(frames)

    # Rebuild every per-TR topic from kis.frames under a new prefix: the same records.
    to_prefix = settings.topic_prefix + "re."
    stats = redecode(settings, to_prefix=to_prefix)
    assert stats.records == count and stats.dead_letters == 0
    rebuilt = read_topics(services, all_topics(to_prefix), registry)
    assert_exactly_the_truth(truth, kafka_by_stream(rebuilt, to_prefix))
    originals = {(m.value["session"], m.value["seq"], m.value["index"]) for m in records}
    again = [m for m in rebuilt if m.topic.removeprefix(to_prefix)[:1] == "h"]
    assert {(m.value["session"], m.value["seq"], m.value["index"]) for m in again} == originals


def _micros(value: Any) -> int:
    return int(value.timestamp() * 1_000_000) if hasattr(value, "timestamp") else int(value)
