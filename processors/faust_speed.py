"""A per-message cost of faust-streaming 0.15.3 (pinned) removed: four tasks per record.

Faust's consumer hands every fetched record to the conductor through
`Service.wait_first(callback(message), suspend_flow.wait())`, which wraps the callback, the
suspend-flow wait and the service's stopped and crashed waits in four new tasks, waits for
the first with `asyncio.wait` and cancels the other three: per record four tasks, their
cancellations and several event-loop turns (about a third of the consumer's cost per record
in the profile of docs/benchmarks.md). The callback almost always finishes without waiting
(it puts the event on the agent's buffer; it waits only when that buffer is full).

The patch runs the callback's first step inline: if it finishes there (the usual case), the
result is the one `wait_first` would have returned and no task is created. If it has to
wait (full buffer, paused flow) or the flow is suspended, the stopped or crashed flag is
set, everything goes through the original `wait_first`, the started callback continuing in
a task exactly where it stopped, so pausing and rebalancing behave as before.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Iterator
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.services import WaitResults

_APPLIED = "_kis_stream_inline_deliver"


@types.coroutine
def _continue(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Drive a coroutine that has already run to its first suspension (a trampoline).

    `waiting_on` is what its first step yielded (a future, or None for a bare yield): it is
    handed to the task first, then values and exceptions are passed through both ways.
    """
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation or an error thrown in by the task
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                return done.value


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """An awaitable that finishes `coro` after its first step yielded `waiting_on`."""
    return await _continue(coro, waiting_on)


async def deliver_inline(service: Any, original: Any, *coros: Any, timeout: Any = None) -> Any:
    """`wait_first(deliver, suspended)` with the deliver coroutine's first step run inline."""
    if (
        len(coros) != 2
        or timeout is not None
        or not all(inspect.iscoroutine(c) for c in coros)
        or service.suspend_flow.is_set()
        or service._stopped.is_set()
        or service._crashed.is_set()
    ):
        return await original(service, *coros, timeout=timeout)
    deliver, suspended = coros
    try:
        waiting_on = deliver.send(None)
    except StopIteration as done:
        suspended.close()
        return WaitResults([deliver], [done.value], False)
    except BaseException:
        suspended.close()
        raise
    return await original(service, resume(deliver, waiting_on), suspended)


def apply() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _APPLIED, False):
        return
    original = cls.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        return await deliver_inline(self, original, *coros, timeout=timeout)

    cls.wait_first = wait_first
    setattr(cls, _APPLIED, True)


# ------------------------------------------------------------------------ batch delivery
#
# Faust's per-record path (drain loop, conductor, channel queue, stream iterator, sensors,
# acknowledgement) costs far more CPU than the agents' own work per record (profile in
# docs/benchmarks.md). With batch delivery, the drain loop hands each partition's records of
# one fetch to the conductor as ONE message (offset = the last record's, value = a `Batch`),
# so that path runs once per fetch and partition instead of once per record. The agent
# (`Processors.events`) takes the batch apart again with `unbatched`: it sees one `Delivered`
# per record, in offset order, with the record's own message. The batch is acknowledged
# when every one of its records has been (each record's offset through the consumer's own
# `ack`, as if delivered alone), so Faust commits exactly what it would have per record:
# at-least-once, nothing committed past a record that is not done.

_BATCH_TOPICS = "_kis_batch_topics"
_BATCH_SEEKS = "_kis_batch_seeks"
_BATCHES_APPLIED = "_kis_stream_batches"


class Batch:
    """The value of a batch message: one partition's records of one fetch, in offset order."""

    __slots__ = ("agents", "messages")

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.agents: int | None = None
        """Agents still working on the records (several agents can read one topic)."""

    def __len__(self) -> int:
        return len(self.messages)


class BatchAck:
    """Acknowledges a batch's message once all of its records are acknowledged."""

    __slots__ = ("event", "messages", "remaining")

    def __init__(self, event: Any, messages: list[Any]) -> None:
        self.event = event
        self.messages = messages
        self.remaining = len(messages)

    def record_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            # The records are done once every agent the batch went to is done with them
            # (the imbalance and spread agents read the same book topics: the first to
            # finish must not mark records the other still holds as done).
            batch: Batch = self.event.value
            batch.agents = (batch.agents or 1) - 1
            if batch.agents == 0:
                consumer = self.event.app.consumer
                for message in self.messages[:-1]:  # the last offset: the batch message's
                    consumer.ack(message)
            self.event.ack()  # (Faust counts the agents of the batch message itself)


class Delivered:
    """One record of a batch, as an agent sees an event: `value`, `message`, `ack()`."""

    __slots__ = ("_acked", "_batch", "last", "message", "value")

    def __init__(self, message: Any, batch: BatchAck, last: bool) -> None:
        self.message = message
        self.value = message.value
        self.last = last
        """The batch's last record."""
        self._batch = batch
        self._acked = False

    def ack(self) -> None:
        if not self._acked:
            self._acked = True
            self._batch.record_done()


def unbatched(event: Any) -> Iterator[Any]:
    """The records an agent's event stands for: its batch's records, or the event itself.

    Stops (leaving the rest unacknowledged, so read again) once the consumer's generation
    changed: a rebalance sought the partition back to its committed offset.
    """
    value = event.value
    if not isinstance(value, Batch):
        yield event
        return
    app = event.app
    generation = event.message.generation_id
    if value.agents is None:  # first taken apart: Faust's conductor counted its channels
        value.agents = max(1, getattr(event.message, "refcount", 1))
    batch = BatchAck(event, value.messages)
    last = value.messages[-1]
    for message in value.messages:
        if app.consumer_generation_id != generation:
            return
        yield Delivered(message, batch, message is last)


def messages_of(event: Any) -> list[Any]:
    """The messages an agent's event stands for: its batch's, or its own."""
    value = event.value
    return value.messages if isinstance(value, Batch) else [event.message]


class Records:
    """What a stateless agent takes at once: the records of one delivered event, in order.

    Iterating gives each record's message (`value`, `topic`, `partition`, `offset`): a
    batch's records, or the event's own message when it is not a batch. It stops once the
    consumer's generation changed (as `unbatched`). `ack()` acknowledges them all together,
    exactly as if each had been acknowledged through `unbatched` (the batch once every agent
    reading it is done; nothing if the iteration was cut short: they are read again).
    """

    __slots__ = ("event", "messages", "taken")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.messages: list[Any] = messages_of(event)
        self.taken = 0
        """Records handed out so far."""

    def __iter__(self) -> Iterator[Any]:
        event = self.event
        if not isinstance(event.value, Batch):  # (as unbatched: the event, unconditionally)
            self.taken = 1
            yield event.message
            return
        app = event.app
        generation = event.message.generation_id
        for message in self.messages:
            if app.consumer_generation_id != generation:
                return
            self.taken += 1
            yield message

    def ack(self) -> None:
        event = self.event
        value = event.value
        if not isinstance(value, Batch):
            if self.taken:
                event.ack()
            return
        if value.agents is None:  # first taken apart: Faust's conductor counted its channels
            value.agents = max(1, getattr(event.message, "refcount", 1))
        if self.taken == len(self.messages):
            batch = BatchAck(event, self.messages)
            batch.remaining = 1
            batch.record_done()  # (as the last of them, through unbatched)


def ends_batch(event: Any) -> bool:
    """Whether the agent gets no more records of `event`'s batch (its last, or cut short).

    Checked by an agent at the end of its work on a record, before `unbatched` is resumed
    (nothing runs in between): state buffered for the batch must be written now, before the
    batch can be acknowledged.
    """
    if not isinstance(event, Delivered):
        return True
    if event.last:
        return True
    batch_event = event._batch.event
    return bool(batch_event.app.consumer_generation_id != batch_event.message.generation_id)


def deliver_in_batches(app: Any, topics: Iterable[str]) -> None:
    """Mark topics whose records the drain loop hands over in batches (see `apply_batches`)."""
    found = app.__dict__.get(_BATCH_TOPICS)
    if found is None:
        found = app.__dict__[_BATCH_TOPICS] = set()
    found.update(topics)


def _seeks(consumer: Any) -> Counter[Any]:
    found: Counter[Any] | None = consumer.__dict__.get(_BATCH_SEEKS)
    if found is None:
        found = consumer.__dict__[_BATCH_SEEKS] = Counter()
    return found


async def drain_batched(self: Any, fetcher: Any) -> None:
    """Faust's `Consumer._drain_messages` (0.15.3), delivering batch topics in batches.

    Records of other topics (changelogs) go one by one as in Faust. A batch fetched before a
    seek of its partition (rebalance) is dropped: the seek set the read offset back and the
    records are fetched again.
    """
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    batch_topics: set[str] = self.app.__dict__.get(_BATCH_TOPICS, set())
    seeks = _seeks(self)
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                batches: dict[TP, list[Any]] = {}
                snapshot: Counter[Any] | None = None
                async for tp, message in ait:
                    if snapshot is None:
                        snapshot = Counter(seeks)
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already read (Faust logs these at dev level only)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp.topic in batch_topics:
                        found = batches.get(tp)
                        if found is None:
                            batches[tp] = [message]
                        else:
                            found.append(message)
                        set_read_offset(tp, offset)
                        continue
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                for tp, messages in batches.items():
                    if snapshot is not None and (
                        seeks["*"] != snapshot["*"] or seeks[tp] != snapshot[tp]
                    ):
                        continue  # sought since the fetch: read again from the seek target
                    await self.wait_first(
                        callback(batch_message(tp, messages)), self.suspend_flow.wait()
                    )
            unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def batch_message(tp: TP, messages: list[Any]) -> ConsumerMessage:
    """One consumer message standing for `messages` (same partition, in offset order)."""
    last = messages[-1]
    return ConsumerMessage(
        last.topic,
        last.partition,
        last.offset,
        last.timestamp,
        last.timestamp_type,
        None,
        None,
        cast(Any, Batch(messages)),
        None,
        0,
        sum(m.serialized_value_size for m in messages),
        tp,
        generation_id=last.generation_id,
    )


_FAUST_GETMANY = faust_consumer.Consumer.getmany
_LEAN_APPLIED = "_kis_stream_lean_getmany"


async def lean_getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
    """Faust's `Consumer.getmany` (0.15.3) with the partition's end offset tracked once.

    Faust reads the partition's high watermark from the consumer thread's aiokafka client
    and hands it to the monitor (lag display only) for every record; here once per partition
    and fetch, before the partition's first record. Records, their order (Faust's
    round-robin scheduler) and the flow/generation checks are Faust's.
    """
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    records_it = self.scheduler.iterate(records)
    to_message = self._to_message
    app = self.app
    buffered = self._buffered_partitions
    tracked: set[TP] = set()
    if self.flow_active:
        for tp, record in records_it:
            if not self.flow_active:
                break
            if app.consumer_generation_id != generation_id:
                break
            if active_partitions is None or tp in active_partitions or tp in buffered:
                if tp not in tracked:
                    tracked.add(tp)
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)
    else:
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")


def apply_lean_getmany() -> bool:
    """Install `lean_getmany` in place of Faust's own (idempotent); False if it is wrapped.

    Must run before processors.faust_fixes wraps `getmany`: only Faust's own function is
    replaced, never a wrapper of it (then nothing changes).
    """
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _LEAN_APPLIED, False):
        return True
    if cls.getmany is not _FAUST_GETMANY:
        return False
    cls.getmany = lean_getmany
    setattr(cls, _LEAN_APPLIED, True)
    return True


def apply_batches() -> None:
    """Patch Faust's consumer for batch delivery once per process (idempotent).

    Apply after processors.faust_fixes: the seek wrappers here count seeks on top of its.
    """
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _BATCHES_APPLIED, False):
        return
    original_seek = cls.seek
    original_perform_seek = cls.perform_seek

    async def seek(self: Any, partition: TP, offset: int) -> None:
        _seeks(self)[partition] += 1
        await original_seek(self, partition, offset)

    async def perform_seek(self: Any) -> None:
        _seeks(self)["*"] += 1
        await original_perform_seek(self)

    cls.seek = seek
    cls.perform_seek = perform_seek
    cls._drain_messages = drain_batched
    apply_fast_changelog()  # (the agents now write tables faster than Faust's buffer sends)
    setattr(cls, _BATCHES_APPLIED, True)


# ------------------------------------------------------------------- changelog writes
#
# A table assignment sends its changelog record through `Topic.send_soon`: a FutureMessage
# in Faust's producer buffer, sent later by a background task through Faust's and aiokafka's
# `send` one record at a time. With batch delivery the agents write faster than that task
# sends (its buffer grew to tens of thousands of records and held the conductor back). For
# tables on the memory store (no persisted offsets to record on delivery), the record is
# serialized exactly as Faust would and appended at once to the partition's batch in
# aiokafka's accumulator, in call order; the batch's delivery is watched (a failure stops
# the worker). Faust flushes that producer before every offset commit, as before.

_CHANGELOG_APPLIED = "_kis_stream_fast_changelog"
_WATCHED = "_kis_changelog_watched"


class _Sent:
    """What Faust's table reads of a sent changelog record: `.message.partition`."""

    __slots__ = ("message", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.message = self


def kafka_producer(app: Any) -> Any:
    """The started aiokafka producer under Faust's, or None."""
    producer = getattr(app, "_producer", None)
    if producer is None or not producer.started:
        return None
    return getattr(producer, "_producer", None)


def append_record(kafka: Any, tp: Any, key: bytes | None, value: bytes | None) -> Any:
    """Append a record to the end of `tp`'s queue of aiokafka batches, now; the batch, or None.

    None: the accumulator is closed or failed, or the record does not fit an empty batch
    (the caller sends it the ordinary way).
    """
    accumulator = kafka._message_accumulator
    if accumulator._closed or accumulator._exception is not None:
        return None
    pending = accumulator._batches.get(tp)
    if pending:
        batch = pending[-1]
        if batch._builder.append(timestamp=None, key=key, value=value, headers=[]) is not None:
            return batch
    batch = accumulator._append_batch(accumulator.create_builder(), tp)
    if batch._builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
        return None
    return batch


def watch_changelog_batch(table: Any, tp: Any, batch: Any) -> None:
    """Stop the worker if this aiokafka batch of `table`'s changelog fails (once per batch)."""
    watched: dict[Any, Any] = table.__dict__.setdefault(_WATCHED, {})
    if watched.get(tp) is not batch:
        watched[tp] = batch
        app = table.app
        batch.future.add_done_callback(lambda future: _changelog_failed(app, future))


def _changelog_failed(app: Any, future: asyncio.Future[Any]) -> None:
    if future.cancelled() or future.exception() is None:
        return
    exc = future.exception()
    app.log.error("a changelog record could not be delivered, stopping: %r", exc)
    crashing: list[Any] = app.__dict__.setdefault("_kis_crashing", [])
    crashing.append(asyncio.ensure_future(app.crash(exc)))


def apply_fast_changelog() -> None:
    """Patch Faust's table changelog writes (memory store) once per process (idempotent)."""
    from aiokafka.structs import TopicPartition
    from faust.tables.base import Collection

    if getattr(Collection, _CHANGELOG_APPLIED, False):
        return
    original = Collection.send_changelog

    def send_changelog(
        self: Any,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Any:
        app = self.app
        kafka = kafka_producer(app)
        if kafka is None or partition is None or app.conf.store.scheme != "memory":
            return original(self, partition, key, value, key_serializer, value_serializer)
        topic = self.changelog_topic
        key_bytes, _ = topic.prepare_key(key, key_serializer or self.key_serializer, None, {})
        value_bytes, _ = topic.prepare_value(
            value, value_serializer or self.value_serializer, None, {}
        )
        tp = TopicPartition(topic.get_topic_name(), partition)
        batch = append_record(kafka, tp, key_bytes, value_bytes)
        if batch is None:
            return original(self, partition, key, value, key_serializer, value_serializer)
        watch_changelog_batch(self, tp, batch)
        return _Sent(partition)  # (the table reads `.message.partition` of the result)

    Collection.send_changelog = send_changelog  # type: ignore[method-assign]
    setattr(Collection, _CHANGELOG_APPLIED, True)
