"""Seeks run in the consumer's thread (processors/faust_fixes.py, fix 7).

A restarted worker died in CI right after "Worker ready": Faust sought a stream partition by
calling aiokafka's `seek` from the event loop's thread while aiokafka's `fetched_records`
ran in the consumer's thread, and both deleted the partition's fetched records (KeyError).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from processors import faust_fixes
from tests.unit.test_faust_fixes import _records

TOPIC = "kis.h0stasp0"
TP1 = TP(TOPIC, 1)
CONSUMER_THREAD = "consumer-thread"


class _ConsumerThread:
    """Faust's consumer thread as the seeks see it: `call_thread` runs in another thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=CONSUMER_THREAD)
        self.seeks: list[tuple[TP, int, str]] = []
        self.hold = False  # hold the next call until `release` is set
        self.queued = asyncio.Event()  # the held call was queued
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        if self.hold:
            self.hold = False
            self.queued.set()
            await self.release.wait()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fun, *args)

    def seek(self, partition: TP, offset: int) -> None:  # (aiokafka's, not thread-safe)
        if self.error is not None:
            raise self.error
        self.seeks.append((partition, offset, threading.current_thread().name))


@pytest.fixture
def consumer() -> Any:
    faust_fixes.apply()
    app = faust.App("fixes-seek-thread", broker="kafka://127.0.0.1:1", store="memory://")
    app.topics.acking_topics.add(TOPIC)
    found: Any = app.consumer
    assert isinstance(found, AIOKafkaConsumer)  # (the driver the worker runs)
    thread = _ConsumerThread()
    found._thread = thread
    found.highwater = lambda tp: 100
    found.resume_flow()
    yield found
    thread.executor.shutdown(wait=True)


def _seek_threads(consumer: Any) -> list[str]:
    return [name for _tp, _offset, name in consumer._thread.seeks]


async def test_a_seek_runs_in_the_consumer_thread(consumer: Any) -> None:
    await consumer.seek(TP1, 30)
    assert consumer._thread.seeks == [(TP1, 30, consumer._thread.seeks[0][2])]
    assert _seek_threads(consumer)[0].startswith(CONSUMER_THREAD)
    assert consumer._thread.seeks[0][2] != threading.current_thread().name


async def test_the_seeks_after_seeking_to_the_committed_offsets_run_in_the_consumer_thread(
    consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def committed(_consumer: Any) -> dict[TP, int]:
        return {TP1: 30, TP(TOPIC, 0): 0}

    monkeypatch.setattr(type(consumer), "seek_to_committed", committed)
    await consumer.perform_seek()  # (each stream partition sought explicitly)
    assert sorted((tp, offset) for tp, offset, _ in consumer._thread.seeks) == [
        (TP(TOPIC, 0), 0),
        (TP1, 30),
    ]
    assert all(name.startswith(CONSUMER_THREAD) for name in _seek_threads(consumer))


async def test_the_drain_loops_seek_of_a_stale_batch_runs_in_the_consumer_thread(
    consumer: Any,
) -> None:
    await consumer.seek(TP1, 20)

    async def fetched_while_sought(timeout: float) -> Any:
        await consumer.seek(TP1, 30)  # (the batch was fetched before this seek)
        return {TP1: _records(40, 41)}, {TP1}

    consumer._wait_next_records = fetched_while_sought
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []
    assert [(tp, offset) for tp, offset, _ in consumer._thread.seeks] == [
        (TP1, 20),
        (TP1, 30),
        (TP1, 30),  # the stale batch's partition sought again
    ]
    assert all(name.startswith(CONSUMER_THREAD) for name in _seek_threads(consumer))


async def test_records_from_after_a_seek_still_in_flight_are_read(consumer: Any) -> None:
    # The seek is queued to the consumer's thread; a fetch queued after it returns records
    # from its target, which can reach the drain loop before the seeking coroutine resumes.
    # They must be judged against the new target: not "already read" (Faust's read offset),
    # not a head gap (this module's base).
    await consumer.seek(TP1, 20)
    consumer._read_offset[TP1] = 50  # (read up to 50 since)
    thread = consumer._thread
    thread.hold = True
    seeking = asyncio.create_task(consumer.seek(TP1, 30))
    await asyncio.sleep(0)  # (the task's first step queues the seek)
    assert thread.queued.is_set()

    async def fetched(timeout: float) -> Any:
        return {TP1: _records(30, 31)}, {TP1}

    consumer._wait_next_records = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == [30, 31]
    assert consumer._read_offset[TP1] == 30  # (the drain loop drops offsets below it)
    assert faust_fixes.head_gaps(consumer.app) == 0
    thread.release.set()
    await seeking
    assert [(tp, offset) for tp, offset, _ in thread.seeks] == [(TP1, 20), (TP1, 30)]


async def test_a_partition_revoked_before_the_drain_loops_seek_does_not_end_the_loop(
    consumer: Any,
) -> None:
    await consumer.seek(TP1, 20)

    async def fetched_while_sought(timeout: float) -> Any:
        await consumer.seek(TP1, 30)
        consumer._thread.error = IllegalStateError("No current assignment for partition")
        return {TP1: _records(40, 41)}, {TP1}

    consumer._wait_next_records = fetched_while_sought
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []  # (no exception)
    with pytest.raises(IllegalStateError):  # (other callers still see it)
        await consumer.seek(TP1, 30)


async def test_a_held_partition_is_released_when_its_seek_is_queued(
    consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After an assignment the stream partitions are held until the recovery's seek. That
    # seek runs in the consumer's thread: records fetched after it can be delivered before
    # it returns. Dropped as held, they were lost (aiokafka's position had moved past them;
    # e2e `crash`: a program partition never committed after the restart).
    async def committed(_consumer: Any) -> dict[TP, int]:
        return {TP1: 30}

    monkeypatch.setattr(type(consumer), "seek_to_committed", committed)
    faust_fixes.unsought(consumer).add(TP1)  # (assigned, not sought yet)
    thread = consumer._thread
    thread.hold = True
    seeking = asyncio.create_task(consumer.perform_seek())
    while not thread.queued.is_set():
        await asyncio.sleep(0)

    async def fetched(timeout: float) -> Any:
        return {TP1: _records(30, 31)}, {TP1}

    consumer._wait_next_records = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == [30, 31]
    thread.release.set()
    await seeking
    assert faust_fixes.unsought(consumer) == set()
    assert faust_fixes.head_gaps(consumer.app) == 0
