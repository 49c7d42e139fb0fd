"""`produce` raising (producer/sink.py): a topic unknown for now waits in order, a message
the broker can never take is set aside, and nothing else is held up by it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from producer.metrics import ProducerMetrics
from producer.sink import KafkaSink, producer_config
from producer.spool import Spool


class FakeProducer:
    """librdkafka's `produce` as it behaves for a topic it believes missing, and for a
    message over `message.max.bytes`; everything else is taken (and acknowledged)."""

    def __init__(self) -> None:
        self.missing: set[str] = set()
        self.taken: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        if topic in self.missing:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))
        if len(value) > 100:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.taken.append((topic, value))

    def __len__(self) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def _sink(tmp_path: Path) -> tuple[KafkaSink, FakeProducer]:
    config = producer_config(
        {"bootstrap.servers": "127.0.0.1:9", "log_level": "0"},
        compression="none", linger_ms=1, memory_mb=1, memory_messages=100,
    )  # fmt: skip
    sink = KafkaSink(
        config, Spool(tmp_path / "spool"), ProducerMetrics(),
        rejected_path=tmp_path / "rejected.jsonl",
    )  # fmt: skip
    fake = FakeProducer()
    sink._producer = fake  # type: ignore[assignment]
    return sink, fake


def _pump_until_drained(sink: KafkaSink) -> None:
    deadline = time.monotonic() + 10
    while sink.spooling and time.monotonic() < deadline:
        sink.pump()
        time.sleep(0.05)


def test_a_topic_unknown_for_now_waits_in_the_spool_and_keeps_everything_in_order(
    tmp_path: Path,
) -> None:
    sink, fake = _sink(tmp_path)
    fake.missing.add("gone")
    sink.send_many("ok", [(b"k", b"ok-0")], 1)
    sink.send_many("gone", [(b"k", b"gone-0"), (b"k", b"gone-1")], 2)  # raises: to the spool
    sink.send_many("ok", [(b"k", b"ok-1")], 3)  # after it, so behind it
    assert sink.spooling and sink.spool_depth == 3
    for _ in range(3):
        sink.pump()
    assert fake.taken == [("ok", b"ok-0")], "nothing may pass the record that waits"
    fake.missing.clear()  # librdkafka knows the topic again
    _pump_until_drained(sink)
    assert fake.taken == [("ok", b"ok-0"), ("gone", b"gone-0"), ("gone", b"gone-1"),
                          ("ok", b"ok-1")]  # fmt: skip
    assert sink.failed == 0 and not (tmp_path / "rejected.jsonl").exists()
    sink.close(0)


def test_a_message_too_large_is_set_aside_and_the_frame_s_other_records_go_on(
    tmp_path: Path,
) -> None:
    sink, fake = _sink(tmp_path)
    big = b"x" * 200
    sink.send_many("t", [(b"k", b"a"), (b"k", big), (b"k", b"b")], 1)
    sink.send_many("t", [(b"k", b"c")], 2)
    _pump_until_drained(sink)
    assert [value for _, value in fake.taken] == [b"a", b"b", b"c"]
    assert sink.failed == 1
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["topic"], r["received_at"]) for r in rejected] == [("t", 1)]
    sink.close(0)
