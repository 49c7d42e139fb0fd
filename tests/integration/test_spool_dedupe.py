"""Start-up de-duplication of a left-over spool against what the broker already holds.

Reproduces the SIGTERM-while-the-broker-is-down race deterministically: records the broker
appended (their acks lost) are also in the spool left by the previous run.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from producer.metrics import ProducerMetrics
from producer.sink import KafkaSink, producer_config
from producer.spool import Spool, SpoolMessage
from producer.spool_dedupe import drop_already_delivered
from tests.conftest import TopicFactory
from tests.integration.producer_oracle import wait_until

pytestmark = [pytest.mark.kafka]

KEYS = (b"005930", b"000660", b"035420", None)


def _record(topic: str, run: str, i: int) -> SpoolMessage:
    key = KEYS[i % len(KEYS)]
    return SpoolMessage(topic, key, f"{run}|seq={i}|payload".encode(), 1_763_700_000_000_000 + i)


def _publish(bootstrap: str, messages: list[SpoolMessage]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for msg in messages:
        producer.produce(msg.topic, msg.value, msg.key, timestamp=msg.received_at // 1000)
    assert producer.flush(30) == 0


def _read_all(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """(key, value) per topic, in offset order within each partition."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
         "enable.auto.commit": False}
    )  # fmt: skip
    out: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    try:
        assignment, ends = [], {}
        meta = consumer.list_topics(timeout=10)
        for topic in topics:
            for p in meta.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    assignment.append(TopicPartition(topic, p, low))
                    ends[(topic, p)] = high
        consumer.assign(assignment)
        while ends:
            for msg in consumer.consume(500, timeout=1.0):
                assert msg.error() is None, msg.error()
                topic, p, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                out[topic].append((msg.key(), msg.value() or b""))
                if offset + 1 >= ends.get((topic, p), 0):
                    ends.pop((topic, p), None)
    finally:
        consumer.close()
    return out


def _drain(bootstrap: str, spool: Spool) -> None:
    config = producer_config(
        {"bootstrap.servers": bootstrap},
        compression="none", linger_ms=1, memory_mb=16, memory_messages=100,
    )  # fmt: skip
    sink = KafkaSink(config, spool, ProducerMetrics())
    try:

        def drained() -> bool:
            sink.pump()
            return sink.spool_depth == 0 and sink.in_flight == 0

        wait_until(drained, 60, "the spool to drain")
    finally:
        assert sink.close(10) == 0


def test_spooled_records_the_broker_holds_are_sent_once_the_rest_still_sent(
    services: Any, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    raw, frames = topic_factory(partitions=3), topic_factory(partitions=1)
    history = [_record(t, "before", i) for t in (raw, frames) for i in range(300)]
    delivered = [_record(t, "acklost", i) for t in (raw, frames) for i in range(40)]
    undelivered = [_record(t, "inflight", i) for t in (raw, frames) for i in range(25)]
    never_sent = [_record(t, "spooled", i) for t in (raw, frames) for i in range(60)]
    _publish(services.bootstrap, history + delivered)  # the broker appended, acks were lost

    first_run = Spool(tmp_path / "segments", segment_bytes=2048)
    for msg in never_sent:  # memory full: went straight to disk
        first_run.append(msg)
    first_run.prepend(delivered + undelivered)  # unacknowledged at SIGTERM, in produce order
    first_run.close()

    second_run = Spool(tmp_path / "segments", segment_bytes=2048)
    assert second_run.depth == len(delivered) + len(undelivered) + len(never_sent)
    skipped = drop_already_delivered(second_run, {"bootstrap.servers": services.bootstrap})
    assert skipped == len(delivered)
    assert second_run.depth == second_run.unread == len(undelivered) + len(never_sent)
    _drain(services.bootstrap, second_run)
    assert not list((tmp_path / "segments").glob("*.seg"))

    in_kafka = _read_all(services.bootstrap, [raw, frames])
    for topic in (raw, frames):
        values = [value for _, value in in_kafka[topic]]
        counts = Counter(values)
        expected = [
            m.value for m in history + delivered + undelivered + never_sent if m.topic == topic
        ]
        assert {v: n for v, n in counts.items() if n > 1} == {}, "a record was published twice"
        assert sorted(values) == sorted(expected)
        # a key lives in one partition: its records keep the produce order across both runs
        position = {value: i for i, value in enumerate(expected)}
        by_key: dict[bytes, list[int]] = defaultdict(list)
        for key, value in in_kafka[topic]:
            if key is not None:
                by_key[key].append(position[value])
        assert len(by_key) == 3
        for seen in by_key.values():
            assert seen == sorted(seen)


def test_nothing_skipped_when_the_broker_holds_none_of_the_spool(
    services: Any, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=2)
    _publish(services.bootstrap, [_record(topic, "before", i) for i in range(50)])
    spool = Spool(tmp_path / "segments")
    spool.prepend([_record(topic, "inflight", i) for i in range(30)])
    spool.close()
    again = Spool(tmp_path / "segments")
    assert drop_already_delivered(again, {"bootstrap.servers": services.bootstrap}) == 0
    assert again.unread == again.depth == 30
    again.close()
