"""Drive the processors' Faust agents in-process (Faust test contexts, in-memory registry).

Raw records are Avro-encoded in the Confluent wire format exactly as on the raw topics; every
record an agent publishes is encoded with its registered output schema and decoded back, so
the tests also prove that the outputs fit their schemas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka.schema_registry import Schema
from faust.types import Message

from kis_stream import topics
from processors.app import Processors
from processors.codec import AvroDecoder, registry_client
from processors.config import ProcessorSettings
from producer.avro import ConfluentEncoder, load_raw_schema
from producer.catalogue import load_catalogue


class Harness:
    """A `Processors` app with mocked sends; `put` feeds raw records to an agent."""

    def __init__(self, streams: tuple[str, ...], partitions: int = 4, **settings: Any) -> None:
        self.registry = registry_client("mock://")
        self.settings = ProcessorSettings(streams=streams, web_enabled=False, **settings)
        self.p = Processors(self.settings, dict.fromkeys(streams, partitions), self.registry)
        self.p.app.finalize()
        self.p.app.flow_control.resume()
        self.out_decoder = AvroDecoder(self.registry)
        self.sent: list[tuple[str, str, Any]] = []
        self._raw_encoders: dict[str, ConfluentEncoder] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        for name, topic in self.p.outputs.items():
            topic.send = self._collector(name, encode=True)  # type: ignore[method-assign]
        for name, topic in self.p.internals.items():
            topic.send = self._collector(name, encode=False)  # type: ignore[method-assign]

    def _collector(self, name: str, *, encode: bool) -> Any:
        async def send(*, key: Any, value: Any, partition: int | None = None) -> None:
            if encode:
                wire = self.p.encoders[name].encode(value)
                decoded = self.out_decoder.decode(wire)
                assert decoded == value, (decoded, value)
            if isinstance(key, bytes):
                key = key.decode()
            self.sent.append((name, key, value))

        return send

    def published(self, topic: str = "") -> list[dict[str, Any]]:
        return [value for name, _, value in self.sent if not topic or name == topic]

    def keys(self, topic: str) -> list[str]:
        return [key for name, key, _ in self.sent if name == topic]

    def encode_raw(self, tr_id: str, record: dict[str, Any]) -> bytes:
        """A raw record (envelope defaults filled in) in the Confluent wire format."""
        if tr_id not in self._raw_encoders:
            schema = load_raw_schema(tr_id)
            subject = topics.subject(topics.raw_topic(tr_id))
            schema_id = self.registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
            self._raw_encoders[tr_id] = ConfluentEncoder(schema, schema_id)
        spec = load_catalogue()[tr_id]
        full = {f.column: None for f in spec.fields}
        full.update(
            tr_id=tr_id,
            venue=spec.venue,
            session="s1",
            seq=0,
            index=0,
            extra_fields=None,
            event_time=None,
            received_at=0,
        )
        full.update(record)
        return self._raw_encoders[tr_id].encode(full)

    @asynccontextmanager
    async def running(self, agent_name: str) -> AsyncIterator[Any]:
        agent = self.p.app.agents[agent_name]
        async with agent.test_context() as ctx:
            yield ctx

    async def put(
        self,
        ctx: Any,
        value: bytes,
        *,
        topic: str,
        key: bytes = b"",
        partition: int = 0,
        offset: int | None = None,
    ) -> None:
        """Deliver one message as if consumed from `topic` (test contexts know one topic)."""
        if offset is None:  # the next offset of that topic partition
            offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = max(
            self._offsets.get((topic, partition), 0), offset + 1
        )
        message = Message(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=0.0,
            timestamp_type=0,
            headers=None,
            key=key,
            value=value,
            checksum=b"",
            serialized_key_size=len(key),
            serialized_value_size=len(value),
            generation_id=self.p.app.consumer_generation_id,
        )
        channel = ctx.stream().channel
        event = await channel.decode(message)
        await channel.put(event)
        async with ctx.new_value_processed:
            await asyncio.wait_for(ctx.new_value_processed.wait(), 5)
        # The test context wakes us when the value enters the agent; let the agent finish it
        # (after fetching the value's writer schema off the event loop, the first time).
        for _ in range(5000):
            if not self.p.schemas.fetching:
                break
            await asyncio.sleep(0.001)
        for _ in range(5):
            await asyncio.sleep(0)
        if ctx._crash_reason:
            raise ctx._crash_reason
