"""Consumer fixes for faust-streaming 0.15.3 (processors/faust_fixes.py, faust_speed batches).

Issue 6: with two workers the first inputs of a partition were lost around a rebalance:
offsets were committed although the records behind them had not been processed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP, Message

from processors import faust_fixes
from processors.faust_speed import Batch, unbatched

TOPIC = "kis.h0stasp0"
TP1 = TP(TOPIC, 1)


def _consumer(name: str) -> tuple[faust.App, Any]:
    faust_fixes.apply()
    app = faust.App(name, broker="kafka://127.0.0.1:1", store="memory://")
    app.topics.acking_topics.add(TOPIC)
    return app, app.consumer


def _acked(consumer: Any, *offsets: int) -> None:
    consumer._acked[TP1] = list(offsets)
    consumer._acked_index[TP1] = set(offsets)


def test_a_commit_never_skips_an_offset_not_acknowledged() -> None:
    _app, consumer = _consumer("fixes-commit")
    faust_fixes.resume_at(consumer, TP1, 0)  # the group's committed offset at the seek
    _acked(consumer, 3, 4, 5)
    assert consumer._new_offset(TP1) is None  # Faust alone: 6 (nothing checked at offset 0)
    _acked(consumer, 0, 1, 2, 3, 4, 5)
    assert consumer._new_offset(TP1) == 6
    consumer._committed_offset[TP1] = 6
    _acked(consumer, 7, 8)
    assert consumer._new_offset(TP1) is None  # Faust alone: 9, past offset 6 (#606)
    _acked(consumer, 6, 7, 8)
    assert consumer._new_offset(TP1) == 9


def test_acknowledgements_below_the_resume_offset_are_dropped_not_committed() -> None:
    _app, consumer = _consumer("fixes-replayed")
    faust_fixes.resume_at(consumer, TP1, 100)
    _acked(consumer, 3, 4, 100, 101)  # 3, 4: a replay from before the seek
    assert consumer._new_offset(TP1) == 102  # Faust alone: 5 (a commit going backwards)


def _message(offset: int, generation: int) -> Message:
    return Message(TOPIC, 1, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


def test_events_faust_skipped_are_not_acknowledged() -> None:
    app, consumer = _consumer("fixes-skipped")
    app.consumer_generation_id = 4
    assert consumer.ack(_message(5, generation=3)) is False  # fetched before the rebalance
    app.flow_control.suspend()  # a rebalance in progress
    assert consumer.ack(_message(6, generation=4)) is False
    app.flow_control.resume()
    assert consumer.ack(_message(7, generation=4)) is True
    assert list(consumer._acked[TP1]) == [7]


class _Event:
    """A batch event as two agents see it (Faust delivers one event to both channels)."""

    def __init__(self, app: Any, batch: Batch, agents: int) -> None:
        self.app = app
        self.value = batch
        self.message = SimpleNamespace(generation_id=3, offset=12, refcount=agents)

    def ack(self) -> None:
        self.message.refcount -= 1


def test_a_batch_read_by_two_agents_is_done_when_both_are() -> None:
    acked: list[int] = []
    app = SimpleNamespace(
        consumer_generation_id=3, consumer=SimpleNamespace(ack=lambda m: acked.append(m.offset))
    )
    messages = [SimpleNamespace(offset=o, value=b"", generation_id=3) for o in (10, 11, 12)]
    event = _Event(app, Batch(messages), agents=2)
    imbalance, spread = list(unbatched(event)), list(unbatched(event))
    for record in imbalance:
        record.ack()
    assert acked == []  # the spread agent still holds 10 and 11
    for record in spread:
        record.ack()
    assert acked == [10, 11]  # (12 is the batch message's own, acknowledged by Faust)
    assert event.message.refcount == 0


def _records(*offsets: int, topic: str = TOPIC) -> list[Any]:
    return [
        SimpleNamespace(
            topic=topic,
            partition=1,
            offset=offset,
            timestamp=0,
            timestamp_type=0,
            headers=None,
            key=b"k",
            value=b"v",
            checksum=None,
            serialized_key_size=1,
            serialized_value_size=1,
        )
        for offset in offsets
    ]


async def test_a_batch_fetched_across_a_seek_is_dropped_and_read_again_from_the_target() -> None:
    _app, consumer = _consumer("fixes-stale-batch")
    sought: list[tuple[TP, int]] = []

    async def seek_in_aiokafka(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer._seek = seek_in_aiokafka
    consumer.highwater = lambda tp: 100
    consumer.resume_flow()
    await consumer.seek(TP1, 20)

    async def fetched_while_sought(timeout: float) -> Any:
        # The consumer thread fetched 40, 41 (the old position) while Faust sought the
        # partition back to its committed offset 30.
        await consumer.seek(TP1, 30)
        return {TP1: _records(40, 41)}, {TP1}

    consumer._wait_next_records = fetched_while_sought
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []
    assert sought[-2:] == [(TP1, 30), (TP1, 30)]  # sought to 30 again: it may have been fresh

    async def fetched(timeout: float) -> Any:
        return {TP1: _records(30, 31)}, {TP1}

    consumer._wait_next_records = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == [30, 31]
    assert faust_fixes.head_gaps(_app) == 0


async def test_records_missing_after_a_seek_are_read_again_then_counted() -> None:
    app, consumer = _consumer("fixes-head-gap")

    async def seek_in_aiokafka(tp: TP, offset: int) -> None:
        pass

    consumer._seek = seek_in_aiokafka
    consumer.highwater = lambda tp: 100
    consumer.resume_flow()
    await consumer.seek(TP1, 30)

    async def fetched(timeout: float) -> Any:
        return {TP1: _records(35, 36)}, {TP1}

    consumer._wait_next_records = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []  # 30..34 missing: again
    assert faust_fixes.head_gaps(app) == 0
    assert [m.offset async for _, m in consumer.getmany(1.0)] == [35, 36]  # really from 35
    assert faust_fixes.head_gaps(app) == 1


# ------------------------------------------------------- changelogs (standbys, recovery)

CHANGELOG = "fixes-app-program_symbols-changelog"
CL0, CL1 = TP(CHANGELOG, 0), TP(CHANGELOG, 1)


def _changelog_reader(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, dict[TP, int], list[tuple[TP, int]]]:
    """A consumer recovering CL0 (resumed) with CL1 paused; aiokafka's fetch positions."""
    app, consumer = _consumer(name)
    tables: Any = app.tables
    tables._changelogs[CHANGELOG] = object()  # (a table's changelog topic)
    positions: dict[TP, int] = {}
    sought: list[tuple[TP, int]] = []

    async def seek_in_aiokafka(tp: TP, offset: int) -> None:
        sought.append((tp, offset))
        positions[tp] = offset

    async def nothing_committed() -> dict[TP, int]:
        return {}

    monkeypatch.setattr(faust_fixes, "_position", lambda consumer, tp: positions.get(tp))
    consumer._seek = seek_in_aiokafka
    consumer.seek_to_committed = nothing_committed
    consumer.highwater = lambda tp: 100
    consumer.assignment = lambda: {CL0, CL1}
    consumer.resume_flow()
    consumer._active_partitions.add(CL0)
    return consumer, positions, sought


@pytest.mark.parametrize("flow", ["paused partition", "flow stopped"])
async def test_changelog_records_fetched_and_dropped_are_read_again(
    monkeypatch: pytest.MonkeyPatch, flow: str
) -> None:
    consumer, positions, sought = _changelog_reader(f"fixes-cl-{flow[0]}", monkeypatch)

    async def fetched(active_partitions: Any, timeout: float) -> Any:
        # The recovery sought the standby CL1 to 20 and resumes it one request later; a
        # fetch begun for CL0 drained CL1's 20..24 (aiokafka returns every partition's
        # records once Faust's set of partitions to read is emptied) ...
        positions[CL1] = 25
        if flow == "flow stopped":
            consumer.stop_flow()  # ... or the flow stopped before Faust iterated the fetch
        return {CL1: _records(20, 21, 22, 23, 24, topic=CHANGELOG)}

    consumer._getmany = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []  # Faust drops them
    assert sought == [(CL1, 20)]  # Faust alone: never read (the standby table short)


async def test_changelog_records_sought_over_since_the_fetch_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, positions, sought = _changelog_reader("fixes-cl-sought", monkeypatch)

    async def fetched_then_sought(active_partitions: Any, timeout: float) -> Any:
        positions[CL1] = 0  # the recovery sought CL1 to 0 after this fetch drained 500..504
        return {CL1: _records(500, 501, 502, 503, 504, topic=CHANGELOG)}

    consumer._getmany = fetched_then_sought
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []
    assert sought == []  # (seeking to 500 would skip 0..499)

    async def fetched_and_read(active_partitions: Any, timeout: float) -> Any:
        positions[CL0] = 5
        return {CL0: _records(0, 1, 2, 3, 4, topic=CHANGELOG)}

    consumer._getmany = fetched_and_read
    assert [m.offset async for _, m in consumer.getmany(1.0)] == [0, 1, 2, 3, 4]
    assert sought == []


async def test_a_changelog_partition_becoming_active_is_recovered_from_its_start() -> None:
    # What makes a standby's own gaps harmless with the memory store: a partition that was
    # a standby here is recovered from the changelog's first offset, not from where the
    # standby had read to (docs/streams.md, "Changelogs").
    app = faust.App("fixes-recovery", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("program_symbols", default=None, partitions=2)
    changelog = TP(table.changelog_topic.get_topic_name(), 1)
    tables: Any = app.tables
    recovery = tables.recovery
    recovery.add_standby(table, changelog)
    recovery.standby_offsets[changelog] = 500  # the standby had applied up to 500
    app.assignor.assigned_actives = lambda: {changelog}  # type: ignore[method-assign]
    app.assignor.assigned_standbys = lambda: set()  # type: ignore[method-assign]
    await recovery.on_rebalance({changelog}, set(), set(), app.consumer_generation_id)

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    consumer = SimpleNamespace(earliest_offsets=earliest_offsets)
    await recovery._build_offsets(consumer, recovery.active_tps, recovery.active_offsets, "a")
    assert recovery.active_offsets[changelog] == -1  # read from offset 0 (Faust's "-1")


async def test_a_changelog_partition_revoked_meanwhile_is_not_sought_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, positions, sought = _changelog_reader("fixes-cl-revoked", monkeypatch)

    async def revoked_in_the_thread(tp: TP, offset: int) -> None:
        raise RuntimeError("No current assignment for partition")  # (aiokafka's seek)

    async def fetched(active_partitions: Any, timeout: float) -> Any:
        positions[CL1] = 25
        return {CL1: _records(20, 21, 22, 23, 24, topic=CHANGELOG)}

    consumer._seek = revoked_in_the_thread
    consumer._getmany = fetched
    assert [m.offset async for _, m in consumer.getmany(1.0)] == []  # (no crash)
    assert sought == []


# ------------------------------------------------ stream partitions held until the seek


class _Rebalancing:
    """A consumer reading TP1 (committed at 30), about to be assigned TP1 and CL0 again."""

    def __init__(self, name: str, monkeypatch: pytest.MonkeyPatch, *, tables: bool) -> None:
        self.app, self.consumer = _consumer(name)
        if tables:
            self.app.Table("held_symbols", default=None, partitions=2)
        self.sought: list[tuple[TP, int]] = []
        self.assign_during_seek = False
        consumer = self.consumer

        async def seek_in_aiokafka(tp: TP, offset: int) -> None:
            self.sought.append((tp, offset))

        async def committed_at_30(_consumer: Any) -> dict[TP, int]:
            if self.assign_during_seek:
                self.assign_during_seek = False
                await self.assign()
            return {TP1: 30}

        async def app_on_assigned(assigned: Any, generation_id: int) -> None:
            consumer.stop_flow()  # (Faust's app: flow stopped, every partition paused)
            consumer.pause_partitions(assigned)

        monkeypatch.setattr(type(consumer), "seek_to_committed", committed_at_30)
        consumer._seek = seek_in_aiokafka
        consumer._on_partitions_assigned = app_on_assigned
        consumer.highwater = lambda tp: 100
        consumer.assignment = lambda: {TP1, CL0}
        consumer.resume_flow()
        consumer._set_active_tps({TP1})  # (read in the previous generation)

    async def assign(self) -> None:
        await self.consumer.on_partitions_assigned({TP1, CL0}, 1)  # TP1 held until the seek

    def fetching(self, *offsets: int, assign: bool = False) -> None:
        async def fetched(active_partitions: Any, timeout: float) -> Any:
            if assign:  # a fetch begun before the rebalance returns after the assignment
                await self.assign()  # (aiokafka waits for it), the flow stopped
            return {TP1: _records(*offsets)}

        self.consumer._getmany = fetched

    async def read(self) -> list[int]:
        return [m.offset async for _, m in self.consumer.getmany(1.0)]


@pytest.mark.parametrize("straddling", ["a fetch", "the last seek"])
async def test_stream_partitions_stay_held_until_the_recovery_seeks_them(
    monkeypatch: pytest.MonkeyPatch, straddling: str
) -> None:
    it = _Rebalancing(f"fixes-held-{straddling[4]}", monkeypatch, tables=True)
    consumer = it.consumer
    if straddling == "a fetch":
        it.fetching(assign=True)  # Faust's getmany seeks when a fetch returns, flow stopped
        assert await it.read() == []
    else:  # the previous recovery's seek (flow running) is under way when the assignment comes
        it.assign_during_seek = True
        await consumer.perform_seek()
    assert it.sought == [(TP1, 30)]
    # The table recovery resumes the flow (changelogs), at its end the stream partitions,
    # then seeks them; a fetch completing before that seek returns TP1's 30, 31 ...
    consumer.resume_flow()
    consumer.resume_partitions({TP1})
    it.fetching(30, 31)
    assert await it.read() == []  # ... held (released early: read twice, or a head gap)
    await consumer.perform_seek()  # the recovery's seek to the committed offsets
    it.fetching(30, 31, 32)
    assert await it.read() == [30, 31, 32]  # once, from the committed offset
    assert faust_fixes.head_gaps(it.app) == 0


async def test_without_tables_the_seek_with_the_flow_stopped_releases_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No table, no recovery: Faust's last seek (`Recovery._resume_streams`) runs with the flow
    # still stopped. It must release the partitions, or their records would be skipped.
    it = _Rebalancing("fixes-held-no-tables", monkeypatch, tables=False)
    consumer = it.consumer
    it.fetching(assign=True)
    assert await it.read() == []  # (the seek of the straddling fetch, as above)
    consumer.resume_partitions({TP1})
    await consumer.perform_seek()  # the last seek, flow stopped
    consumer.resume_flow()
    it.fetching(30, 31)
    assert await it.read() == [30, 31]
    assert it.sought == [(TP1, 30), (TP1, 30)]
    assert faust_fixes.head_gaps(it.app) == 0


def test_resuming_a_running_flow_keeps_what_the_agents_have_not_read_yet() -> None:
    # Faust's recovery resumes the flow when it starts reading the changelogs and again after
    # seeking the stream partitions: records delivered between that seek and the second
    # resume were in the agents' buffers, and mode's resume emptied them (lost: the drain
    # loop had read past them). Only a resume after a suspension (a rebalance) clears.
    app, _ = _consumer("fixes-resume")
    buffer = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # as an agent's channel
    app.flow_control.resume()  # (the recovery starts reading the changelogs)
    buffer.put_nowait("record fetched after the seek")
    app.flow_control.resume()  # (the recovery is complete)
    assert buffer.qsize() == 1
    assert app.flow_control.is_active()
    app.flow_control.suspend()  # a rebalance begins: what is buffered is from before it
    app.flow_control.resume()
    assert buffer.qsize() == 0


async def test_before_commit_writes_go_out_before_the_offsets_and_a_failure_stops_them() -> None:
    app, consumer = _consumer("fixes-before-commit")
    steps: list[Any] = []

    async def flush() -> None:
        steps.append("producer flushed")

    async def commit(offsets: Any) -> bool:
        steps.append(("committed", dict(offsets)))
        return True

    app.producer.flush = flush  # type: ignore[method-assign]
    consumer._commit = commit
    consumer.assignment = lambda: {TP1}
    faust_fixes.before_commit(app, lambda offsets: steps.append(("before", dict(offsets))))
    assert await consumer._commit_offsets({TP1: 7})
    assert steps == [("before", {TP1: 7}), "producer flushed", ("committed", {TP1: 7})]

    def refuse(offsets: Any) -> None:
        raise RuntimeError("cannot write the changelog")

    faust_fixes.before_commit(app, refuse)
    steps.clear()
    with pytest.raises(RuntimeError, match="cannot write"):
        await consumer._commit_offsets({TP1: 9})
    assert steps == [("before", {TP1: 9})]  # nothing flushed, nothing committed
