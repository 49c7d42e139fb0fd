"""Changelog records appended straight to aiokafka's batches (processors/faust_speed.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from processors.faust_speed import append_record

TP = TopicPartition("app-bars-changelog", 2)


def _kafka(batch_size: int = 16_384) -> Any:
    return SimpleNamespace(
        _message_accumulator=MessageAccumulator(None, batch_size, 0, 30, linger_ms=20)
    )


def _records(batch: Any) -> list[tuple[bytes, bytes | None]]:
    return [(r.key, r.value) for r in DefaultRecordBatch(bytearray(batch._builder._build()))]


def test_records_keep_their_order_across_batches() -> None:
    async def scenario() -> None:
        kafka = _kafka(batch_size=200)  # a few records per batch
        sent = [(b"k%d" % i, b"v" * 40 if i % 3 else None) for i in range(12)]
        for key, value in sent:
            assert append_record(kafka, TP, key, value) is not None
        batches = list(kafka._message_accumulator._batches[TP])
        assert len(batches) > 1  # full batches stay queued, in order
        assert [r for batch in batches for r in _records(batch)] == sent

    asyncio.run(scenario())


def test_a_closed_producer_leaves_the_record_to_faust() -> None:
    async def scenario() -> None:
        kafka = _kafka()
        kafka._message_accumulator._closed = True
        assert append_record(kafka, TP, b"k", b"v") is None
        big = _kafka(batch_size=100)
        assert append_record(big, TP, b"k", b"x" * 10_000) is not None  # alone in a batch
        assert append_record(big, TP, b"k", b"x" * 10_000) is not None

    asyncio.run(scenario())
