"""Messages librdkafka fails for a reason that passes are sent again, in order, not set aside.

A broker that restarts can answer, before it has loaded its topics, that a topic does not
exist; librdkafka then fails the messages it holds for that topic and refuses new ones for a
while. The same happens, deterministically, for a topic created only after the messages were
produced (`topic.metadata.propagation.max.ms` short): that is what these tests use.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from producer.metrics import ProducerMetrics
from producer.sink import KafkaSink, producer_config
from producer.spool import Spool
from tests.conftest import TopicFactory
from tests.integration.producer_oracle import wait_until
from tests.integration.test_spool_dedupe import _read_all

pytestmark = [pytest.mark.kafka]

KEYS = (b"005930", b"000660", b"035420")


def _sink(services: Any, tmp_path: Path, **extra: Any) -> KafkaSink:
    config = producer_config(
        {"bootstrap.servers": services.bootstrap, "topic.metadata.propagation.max.ms": 1000,
         **extra},
        compression="none", linger_ms=1, memory_mb=16, memory_messages=1000,
    )  # fmt: skip
    return KafkaSink(
        config, Spool(tmp_path / "spool"), ProducerMetrics(),
        rejected_path=tmp_path / "rejected.jsonl",
    )  # fmt: skip


def _send(sink: KafkaSink, topics: tuple[str, ...], phase: str, count: int) -> list[str]:
    """`count` frames per topic, two records each (two keys); returns the values in order."""
    sent = []
    for i in range(count):
        for topic in topics:
            records = [(KEYS[(i + j) % 3], f"{topic}|{phase}|{i}|{j}".encode()) for j in range(2)]
            sink.send_many(topic, records, 1_763_700_000_000_000 + i)
            sent += [f"{topic}|{phase}|{i}|{j}" for j in range(2)]
        sink.pump()
    return sent


def _settle(sink: KafkaSink) -> None:
    def settled() -> bool:
        sink.pump()
        return sink.spool_depth == 0 and sink.in_flight == 0 and not sink.spooling

    wait_until(settled, 90, "every message delivered")


def _assert_all_once_in_key_order(in_kafka: dict[str, Any], topic: str, sent: list[str]) -> None:
    values = [value.decode() for _, value in in_kafka[topic]]
    expected = [v for v in sent if v.startswith(f"{topic}|")]
    assert sorted(values) == sorted(expected), "lost or duplicated"
    position = {value: i for i, value in enumerate(expected)}
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for key, value in in_kafka[topic]:
        by_key[key].append(position[value.decode()])
    assert len(by_key) == 3
    for seen in by_key.values():
        assert seen == sorted(seen), "a key's records out of produce order"


def test_messages_failed_for_an_unknown_topic_are_sent_again_in_order(
    services: Any, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    existing, late = topic_factory(partitions=2), f"late-{uuid.uuid4().hex[:10]}"
    sink = _sink(services, tmp_path)
    try:
        sent = _send(sink, (existing, late), "before", 40)
        # librdkafka gives up on the unknown topic after ~1 s and reports every message
        wait_until(
            lambda: (sink.pump(), sink.spooling or sink.failed > 0)[1],
            30, "the failures to be reported",
        )  # fmt: skip
        sent += _send(sink, (existing, late), "failed", 40)  # held in the spool meanwhile
        admin = AdminClient({"bootstrap.servers": services.bootstrap})
        created = admin.create_topics([NewTopic(late, num_partitions=2, replication_factor=1)])
        created[late].result(30)
        sent += _send(sink, (existing, late), "after", 40)
        _settle(sink)
        resent = sink._metrics.delivery_resends.labels(late)._value.get()
    finally:
        assert sink.close(10) == 0
    assert resent >= 80, "the topic's first messages should have failed and been sent again"
    assert not (tmp_path / "rejected.jsonl").exists(), "a message failed for now was set aside"
    assert sink.failed == 0
    in_kafka = _read_all(services.bootstrap, [existing, late])
    for topic in (existing, late):
        _assert_all_once_in_key_order(in_kafka, topic, sent)


def test_a_message_too_large_is_set_aside_and_the_rest_delivered_in_order(
    services: Any, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=2)
    sink = _sink(services, tmp_path, **{"message.max.bytes": 4096})
    try:
        sent = _send(sink, (topic,), "a", 10)
        big = b"x" * 8192
        sink.send_many(topic, [(KEYS[0], f"{topic}|small-before".encode()), (KEYS[1], big)], 1)
        sent += [f"{topic}|small-before"]
        sent += _send(sink, (topic,), "b", 10)
        _settle(sink)
    finally:
        assert sink.close(10) == 0
    assert sink.failed == 1
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [r["topic"] for r in rejected] == [topic]
    assert "too large" in rejected[0]["error"].lower() or "size" in rejected[0]["error"].lower()
    in_kafka = _read_all(services.bootstrap, [topic])
    values = [value.decode() for _, value in in_kafka[topic]]
    assert sorted(values) == sorted(sent)
