"""The Faust app of the processors and what the stream modules share.

`Processors` builds one Faust app per worker: broker and web settings, the registry codecs,
output topics with their Avro schemas, counters, and the agents of the selected streams
(each stream module has a `register(processors)` that adds its agents and tables).

Design rules that every stream follows (see docs/streams.md):
- agents have concurrency 1 (faust-streaming can commit past in-flight events above 1);
- processing is at-least-once; records carry what makes a replayed copy recognisable;
- event time comes from the exchange (or the producer's receive time), never `now()`;
- state lives in changelog-backed tables; in-memory indexes are rebuilt on recovery.

`faust -A processors.app worker` works too: the module-level `app` is built on first access
from the environment (it checks the input topics on the broker first).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import faust
from confluent_kafka.schema_registry import SchemaRegistryClient

from kis_stream import topics
from processors import broker_outage, faust_fixes, faust_speed, fetch_wait, gc_pauses
from processors.codec import AvroDecoder, AvroEncoder, WireError, registry_client
from processors.config import ProcessorSettings
from processors.inputs import BOOK_COLUMNS, BOOK_FIELDS, QUOTE_COLUMNS, TRADE_FIELDS
from processors.ordering import InOrder
from processors.publish import Output
from processors.schema_wait import SchemaWait
from processors.topology import BARS_LATE_OUT, BARS_OUT
from schemas import DERIVED

log = logging.getLogger("processors")

SCHEMA_FILES: dict[str, str] = {
    BARS_OUT: "bars_1s.avsc",
    BARS_LATE_OUT: "bars_1s_late.avsc",
    topics.BOOK_IMBALANCE: "book_imbalance.avsc",
    topics.PROGRAM_NETBUY: "program_netbuy.avsc",
    topics.SPREAD_KRX_NXT: "spread_krx_nxt.avsc",
}
"""Output schema per derived topic (by its contract name)."""


class StreamStats:
    """Counters of one stream (events in, records out, skips by reason), shown by the views."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def skip(self, reason: str, detail: object = "") -> None:
        """Count a skipped input; log the first of each reason and then every 1000th."""
        key = "skipped: " + reason
        self.counts[key] += 1
        n = self.counts[key]
        if n == 1 or n % 1000 == 0:
            log.warning("skipped input (%s, %d so far) %s", reason, n, detail)


class Processors:
    """One worker's Faust app, codecs, outputs and the agents of the selected streams."""

    def __init__(
        self,
        settings: ProcessorSettings,
        partitions: Mapping[str, int],
        registry: SchemaRegistryClient | None = None,
    ) -> None:
        if settings.batch_delivery:  # (before faust_fixes, which wraps Faust's getmany)
            faust_speed.apply_lean_getmany()
        faust_fixes.apply()
        fetch_wait.apply(settings.fetch_max_wait_ms)
        broker_outage.apply()
        broker_outage.quiet_client_logs()
        if settings.inline_delivery:
            faust_speed.apply()
        if settings.batch_delivery:  # (after faust_fixes: it counts seeks on top of them)
            faust_speed.apply_batches()
        self.settings = settings
        self.partitions = dict(partitions)
        self.topology = settings.topology()
        self.registry = registry or registry_client(settings.schema_registry_url)
        self.decoder = AvroDecoder(self.registry)
        self.schemas = SchemaWait(self.registry)
        self.decoders = {
            "bars": AvroDecoder(self.registry, TRADE_FIELDS),
            "imbalance": AvroDecoder(self.registry, BOOK_FIELDS, columns=BOOK_COLUMNS),
            "spread": AvroDecoder(self.registry, columns=QUOTE_COLUMNS),
        }
        self.encoders: dict[str, AvroEncoder] = {}
        self.outputs: dict[str, Output] = {}
        self.internals: dict[str, Output] = {}
        self.stats: dict[str, StreamStats] = {}
        self.guards: list[InOrder] = []
        self.agent_gaps = 0
        """Offset gaps seen by the agents (should stay 0; see `offset_gaps`)."""
        self.send_failures = 0
        self._crashing: list[asyncio.Future[None]] = []
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_urls(),
            broker_credentials=settings.broker_credentials(),
            store="memory://",
            processing_guarantee="at_least_once",
            topic_partitions=max(self.partitions.values(), default=1),
            topic_replication_factor=settings.replication,
            table_standby_replicas=settings.standby_replicas,
            broker_commit_interval=settings.commit_interval,
            broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
            consumer_auto_offset_reset="earliest",
            producer_linger=settings.producer_linger_ms / 1000,
            producer_max_batch_size=settings.producer_max_batch_bytes,
            web_enabled=settings.web_enabled,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            datadir=str(settings.data_dir),
            autodiscover=False,
            # Do not wait on rebalance for events still held (the spread agent acknowledges a
            # trigger only once published): uncommitted, they are read again by the new owner.
            stream_wait_empty=False,
        )
        for stream in settings.streams:
            self.stats[stream] = StreamStats()
            importlib.import_module(f"processors.{stream}").register(self)
        importlib.import_module("processors.views").register(self)
        if settings.gc_freeze:
            gc_pauses.register(self.app)

        @self.app.on_partitions_assigned.connect
        async def _reassigned(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            for guard in self.guards:
                guard.reset()

    @property
    def offset_gaps(self) -> int:
        """Records skipped: gaps the agents saw, and head gaps after a seek (should stay 0).

        Shown by the views. Head gaps (`faust_fixes.head_gaps`): records missing between
        the group's committed offset and the first record read after an assignment, which
        the agents' own watch cannot see (it restarts at every assignment).
        """
        return self.agent_gaps + faust_fixes.head_gaps(self.app)

    # ------------------------------------------------------------------ topics and codecs

    def raw_input(self, *names: str) -> faust.TopicT:
        """Raw TR topics as bytes: agents decode themselves, so bad bytes are counted, not fatal."""
        if self.settings.batch_delivery:
            faust_speed.deliver_in_batches(self.app, names)
        return self.app.topic(*names, key_serializer="raw", value_serializer="raw")

    def internal(self, name: str, partitions: int) -> Output:
        """A helper topic (bytes; created at start-up by `kis-stream process`).

        `partitions` is the count the start-up created it with (kept for the callers' sake).
        """
        topic = self.internals.get(name)
        if topic is None:
            topic = self.internals[name] = Output(self.app, name, None, self._send_failed)
        return topic

    def output(self, role: str) -> Output:
        """A derived topic (by contract name, prefixed per settings): Avro, UTF-8 keys.

        Values are Confluent wire-format Avro, the schema registered under `<topic>-value`;
        `send(key=..., value=record)` as with a Faust topic (see processors/publish.py).
        """
        name = self.topology.derived(role)
        topic = self.outputs.get(name)
        if topic is None:
            with open(DERIVED / SCHEMA_FILES[role], encoding="utf-8") as fh:
                schema = json.load(fh)
            encoder = self.encoders[name] = AvroEncoder(self.registry, topics.subject(name), schema)
            topic = self.outputs[name] = Output(self.app, name, encoder, self._send_failed)
        return topic

    def _send_failed(self, topic: str, exc: BaseException) -> None:
        """A record was not delivered: stop (at-least-once: the inputs are read again)."""
        self.send_failures += 1
        self._crashing.append(asyncio.ensure_future(self.app.crash(exc)))

    def register_schemas(self) -> dict[str, int]:
        """Register every output schema now (start-up) instead of on the first record."""
        return {name: encoder.register() for name, encoder in self.encoders.items()}

    def decode(self, stream: str, data: Any) -> dict[str, Any] | None:
        """A raw record, or None (counted and logged) when the bytes are not one."""
        try:
            return self.decoders.get(stream, self.decoder).decode(data)
        except WireError as exc:
            self.stats[stream].skip("undecodable", exc)
            return None

    async def events(
        self,
        stream: faust.StreamT[bytes],
        *,
        ack: bool = True,
        unguarded: frozenset[str] = frozenset(),
    ) -> AsyncIterator[faust.EventT[bytes]]:
        """The agent's events, acknowledged once processed, watched for offset gaps.

        An event is acknowledged when the agent asks for the next one (not if it raised);
        with `ack=False` the agent acknowledges itself. Events of `unguarded` topics are not
        watched (see processors/ordering.py).
        """
        guard = InOrder()
        self.guards.append(guard)
        async for delivered in cast(faust.Stream[bytes], stream).noack().events():
            await self.schemas.ready(faust_speed.messages_of(delivered))
            for event in faust_speed.unbatched(delivered):  # (a batch's records, in order)
                message = event.message
                if message.topic not in unguarded and not guard.check(message.tp, message.offset):
                    self.agent_gaps += 1
                yield event
                if ack:
                    event.ack()

    async def event_batches(
        self, stream: faust.StreamT[bytes]
    ) -> AsyncIterator[list[faust.EventT[bytes]]]:
        """The agent's events, each delivered batch's at once, watched for offset gaps; the
        agent acknowledges each event itself (`events` with `ack=False`, a batch per step).
        """
        guard = InOrder()
        self.guards.append(guard)
        async for delivered in cast(faust.Stream[bytes], stream).noack().events():
            await self.schemas.ready(faust_speed.messages_of(delivered))
            events = list(faust_speed.unbatched(delivered))  # (a batch's records, in order)
            if not events:
                continue
            first, last = events[0].message, events[-1].message
            offsets = [event.message.offset for event in events]
            if first.tp == last.tp and offsets == list(range(first.offset, last.offset + 1)):
                if not guard.check_run(first.tp, first.offset, last.offset, len(events)):
                    self.agent_gaps += 1
            else:
                for event in events:
                    message = event.message
                    if not guard.check(message.tp, message.offset):
                        self.agent_gaps += 1
            yield events

    async def batches(self, stream: faust.StreamT[bytes]) -> AsyncIterator[faust_speed.Records]:
        """The agent's events as `Records`: each delivered batch's records at once.

        For stateless agents (a record is a pure function of one input): the per-record
        layers of `events` (an event object, an async step and an acknowledgement per
        record) become one per batch. The records are acknowledged together when the agent
        asks for the next batch (not if it raised), and watched for offset gaps.
        """
        guard = InOrder()
        self.guards.append(guard)
        async for delivered in cast(faust.Stream[bytes], stream).noack().events():
            records = faust_speed.Records(delivered)
            await self.schemas.ready(records.messages)
            yield records
            for message in records.messages[: records.taken]:
                if not guard.check(message.tp, message.offset):
                    self.agent_gaps += 1
            records.ack()

    def active_partitions(self, topic_names: tuple[str, ...]) -> set[int]:
        """Partitions of these topics that this worker processes now."""
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in topic_names
        }


def from_environment() -> Processors:
    """Build the app from the environment after the start-up checks of `kis-stream process`."""
    from processors.cli import prepare

    settings = ProcessorSettings()  # type: ignore[call-arg]  # (env aliases)
    return Processors(settings, prepare(settings))


_built: list[faust.App] = []


def __getattr__(name: str) -> Any:
    """`processors.app.app` for `faust -A processors.app`: built from the environment once."""
    if name == "app":
        if not _built:
            _built.append(from_environment().app)
        return _built[0]
    raise AttributeError(name)
