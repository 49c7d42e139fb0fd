"""Publishing derived and helper records: encoded here, handed straight to Faust's producer.

Why not `faust.Topic.send`: per record it goes through Faust's channel layer (key and value
codecs looked up in a serializer registry, a `FutureMessage`, sensor calls, a callback to
resolve it), which cost about as much as the agents' own work per event (profile in
docs/benchmarks.md). The records here are already bytes once our Avro encoder has run, so
`Output.send` appends them to the accumulator of the aiokafka producer Faust itself uses,
with aiokafka's own key-hash partitioning (murmur2, computed once per key): Faust's and
aiokafka's `send` wrappers (metadata wait, partition lookup and pure-Python murmur2 per
record) cost more than the append itself. A record that fits the partition's open batch goes
into it directly, and that batch's delivery is watched once instead of through a future per
record. (aiokafka is pinned: this uses its accumulator's internals, tests/unit/test_publish.py.)

Delivery stays at-least-once: before Faust commits offsets it flushes this same producer, so
every record sent for an input is in Kafka before that input's offset is committed. A record
the producer finally fails to deliver (retries exhausted) stops the worker: its partitions are
read again from the last commit by the next owner, instead of a gap in the output.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from processors.codec import AvroEncoder

log = logging.getLogger(__name__)

_NO_HEADERS: list[tuple[str, bytes]] = []
_MAX_KEYS = 100_000


class Output:
    """One topic the processors write (a derived topic with its encoder, or a helper topic)."""

    def __init__(
        self,
        app: faust.App,
        name: str,
        encoder: AvroEncoder | None,
        on_failure: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.encoder = encoder
        """Encodes record values; None: values are bytes already (helper topics)."""
        self.on_failure = on_failure
        self.sent = 0
        self.failed = 0
        self._kafka: AIOKafkaProducer | None = None
        self._timeout = 40.0
        self._tps: dict[bytes, TopicPartition] = {}
        """Partition per key (the topic's partition count does not change while running)."""
        self._explicit: dict[int, TopicPartition] = {}
        self._watched: dict[TopicPartition, Any] = {}
        """Per partition, the last aiokafka batch whose delivery is watched."""

    async def send(self, *, key: str | bytes, value: Any, partition: int | None = None) -> None:
        """Queue one record in the producer (it is in Kafka before the next offset commit)."""
        data = self.encoder.encode(value) if self.encoder is not None else value
        key_bytes = key.encode() if isinstance(key, str) else key
        kafka = self._kafka
        if kafka is None:
            kafka = await self._start()
        if partition is None:
            tp = self._tps.get(key_bytes)
            if tp is None:
                tp = self._partition_of(kafka, key_bytes, data)
        else:
            tp = self._explicit.get(partition)
            if tp is None:
                tp = self._explicit[partition] = TopicPartition(self.name, partition)
        accumulator = kafka._message_accumulator
        pending = accumulator._batches.get(tp)
        if pending and not accumulator._closed and accumulator._exception is None:
            # The partition's open batch takes the record: no future per record (aiokafka
            # makes and resolves one per message); the batch's own future is watched.
            batch = pending[-1]
            added = batch._builder.append(
                timestamp=None, key=key_bytes, value=data, headers=_NO_HEADERS
            )
            if added is not None:
                self.sent += 1
                if self._watched.get(tp) is not batch:
                    self._watched[tp] = batch
                    batch.future.add_done_callback(self._delivered)
                return
        future = await accumulator.add_message(  # a new batch (or wait for room)
            tp, key_bytes, data, self._timeout, timestamp_ms=None, headers=_NO_HEADERS
        )
        self.sent += 1
        future.add_done_callback(self._delivered)

    async def _start(self) -> AIOKafkaProducer:
        """The aiokafka producer under Faust's (started if need be), topic metadata known."""
        producer = self.app.producer
        if not producer.started:  # timers and recovery hooks may run before the first agent
            await self.app.maybe_start_producer()
        kafka: AIOKafkaProducer = producer._ensure_producer()  # type: ignore[attr-defined]
        await kafka.client._wait_on_metadata(self.name)
        self._timeout = kafka._request_timeout_ms / 1000
        self._kafka = kafka
        return kafka

    def _partition_of(self, kafka: AIOKafkaProducer, key: bytes, data: bytes) -> TopicPartition:
        """aiokafka's partition for `key` (its partitioner, murmur2), remembered per key."""
        if len(self._tps) >= _MAX_KEYS:
            self._tps.clear()
        tp = TopicPartition(self.name, kafka._partition(self.name, None, None, None, key, data))
        self._tps[key] = tp
        return tp

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            return
        self.failed += 1
        log.error("%s: a record could not be delivered, stopping the worker: %r", self.name, exc)
        if self.on_failure is not None:
            self.on_failure(self.name, exc)
