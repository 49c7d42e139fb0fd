"""Table writes in a partition named by the caller (processors/table_writes.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from processors.table_writes import TableWriter


def _records(kafka: Any, tp: TopicPartition) -> list[tuple[bytes, bytes | None]]:
    batches = kafka._message_accumulator._batches.get(tp, ())
    return [
        (r.key, r.value)
        for batch in batches
        for r in DefaultRecordBatch(bytearray(batch._builder._build()))
    ]


def test_writes_append_what_faust_would_send_to_the_given_changelog_partition() -> None:
    async def scenario() -> None:
        app = faust.App("writes", broker="kafka://127.0.0.1:1", store="memory://")
        table = app.Table("spread_books", default=None, partitions=4)
        kafka = SimpleNamespace(_message_accumulator=MessageAccumulator(None, 16_384, 0, 30))
        app._producer = SimpleNamespace(started=True, _producer=kafka)  # type: ignore[attr-defined]
        writer = TableWriter(table)
        quote = [70_000, 70_100, 12, 30, 90_001, 1_732_000_000_000_000, 17]
        writer.set(3, "005930|KRX|17", quote)
        writer.set(3, "005930|NXT|18", [1.5, None, True])
        assert writer.delete(3, "005930|KRX|17")
        assert not writer.delete(3, "005930|KRX|17")  # (gone: no second tombstone)
        topic = table.changelog_topic

        def faust_bytes(key: Any, value: Any) -> tuple[bytes, bytes | None]:
            key_bytes, _ = topic.prepare_key(key, table.key_serializer, None, {})
            if value is None:
                return key_bytes, None
            value_bytes, _ = topic.prepare_value(value, table.value_serializer, None, {})
            return key_bytes, value_bytes

        tp = TopicPartition(topic.get_topic_name(), 3)
        assert _records(kafka, tp) == [
            faust_bytes("005930|KRX|17", quote),
            faust_bytes("005930|NXT|18", [1.5, None, True]),
            faust_bytes("005930|KRX|17", None),
        ]
        assert dict(table.data.items()) == {"005930|NXT|18": [1.5, None, True]}
        assert not any(_records(kafka, TopicPartition(tp.topic, p)) for p in (0, 1, 2))

    asyncio.run(scenario())


def test_without_a_started_producer_writes_go_through_the_tables_own_send() -> None:
    app = faust.App("writes-idle", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("spread_books", default=None, partitions=4)
    sent: list[tuple[int | None, Any, Any, Any]] = []

    def send_changelog(partition: int | None, key: Any, value: Any, *a: Any, **kw: Any) -> Any:
        sent.append((partition, key, value, kw.get("value_serializer")))

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    writer = TableWriter(table)
    writer.set(1, "a", [1])
    assert writer.delete(1, "a")
    assert sent == [(1, "a", [1], None), (1, "a", None, "raw")]
    assert not table.data
