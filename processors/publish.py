"""Publishing derived and helper records: encoded here, handed straight to Faust's producer.

Why not `faust.Topic.send`: per record it goes through Faust's channel layer (key and value
codecs looked up in a serializer registry, a `FutureMessage`, sensor calls, a callback to
resolve it), which cost about as much as the agents' own work per event (profile in
docs/benchmarks.md). The records here are already bytes once our Avro encoder has run, so
`Output.send` calls the producer Faust itself uses (`app.producer.send`, aiokafka underneath)
with the same key-hash partitioning (partition None: aiokafka's murmur2 partitioner).

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

from processors.codec import AvroEncoder

log = logging.getLogger(__name__)


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

    async def send(self, *, key: str | bytes, value: Any, partition: int | None = None) -> None:
        """Queue one record in the producer (it is in Kafka before the next offset commit)."""
        data = self.encoder.encode(value) if self.encoder is not None else value
        producer = self.app.producer
        if not producer.started:  # timers and recovery hooks may run before the first agent
            await self.app.maybe_start_producer()
        future = await producer.send(
            self.name,
            key.encode() if isinstance(key, str) else key,
            data,
            partition,
            None,
            None,
        )
        self.sent += 1
        asyncio.ensure_future(future).add_done_callback(self._delivered)

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
