"""Output.send: records appended to aiokafka's accumulator, delivery watched per batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from processors.publish import Output

TOPIC = "kis.book.imbalance"


class _Kafka:
    """The parts of AIOKafkaProducer that Output uses, over a real accumulator."""

    def __init__(self) -> None:
        self._message_accumulator = MessageAccumulator(None, 16_384, 0, 30, linger_ms=20)
        self._request_timeout_ms = 1_000
        self.client = SimpleNamespace(_wait_on_metadata=self._metadata)

    async def _metadata(self, topic: str) -> None:
        return None

    def _partition(self, topic: str, *args: Any) -> int:
        key = args[3]
        return 0 if key == b"A|KRX" else 1


def _output(failures: list[BaseException]) -> tuple[Output, _Kafka]:
    kafka = _Kafka()
    producer = SimpleNamespace(started=True, _ensure_producer=lambda: kafka)
    app: Any = SimpleNamespace(producer=producer)
    return Output(app, TOPIC, None, lambda name, exc: failures.append(exc)), kafka


def _records(batch: Any) -> list[tuple[bytes, bytes]]:
    built = DefaultRecordBatch(bytearray(batch._builder._build()))
    return [(r.key, r.value) for r in built]


def test_records_go_into_their_partitions_batch_in_order() -> None:
    async def scenario() -> None:
        failures: list[BaseException] = []
        out, kafka = _output(failures)
        for i in range(5):
            await out.send(key="A|KRX", value=b"a%d" % i)
        await out.send(key=b"B|NXT", value=b"b0")
        batches = kafka._message_accumulator._batches
        (a_batch,) = batches[TopicPartition(TOPIC, 0)]
        (b_batch,) = batches[TopicPartition(TOPIC, 1)]
        assert _records(a_batch) == [(b"A|KRX", b"a%d" % i) for i in range(5)]
        assert _records(b_batch) == [(b"B|NXT", b"b0")]
        assert out.sent == 6
        a_batch.done(base_offset=0)
        await asyncio.sleep(0)
        assert failures == []

    asyncio.run(scenario())


def test_a_failed_batch_stops_the_worker_once_per_batch() -> None:
    async def scenario() -> None:
        failures: list[BaseException] = []
        out, kafka = _output(failures)
        for i in range(3):
            await out.send(key="A|KRX", value=b"a%d" % i)
        (batch,) = kafka._message_accumulator._batches[TopicPartition(TOPIC, 0)]
        batch.failure(RuntimeError("broker gone"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert [str(exc) for exc in failures] == ["broker gone"] * len(failures)
        assert 1 <= len(failures) <= 2  # the batch, and the first record's own future
        assert out.failed == len(failures)

    asyncio.run(scenario())


def test_explicit_partitions_are_kept() -> None:
    async def scenario() -> None:
        out, kafka = _output([])
        await out.send(key=b"clock", value=b"{}", partition=2)
        assert list(kafka._message_accumulator._batches) == [TopicPartition(TOPIC, 2)]

    asyncio.run(scenario())
