"""Fixes for faust-streaming 0.15.3 (pinned), and what Faust does not tell its agents.

The invariant they keep: after an assignment a worker reads each input partition from the
group's committed offset, and never commits an offset unless every record before it was
processed by every agent reading it (issue 6: two workers lost the first inputs of a
partition around a rebalance). What broke it, and the fix for each:

1. Skipped events acknowledged (`ack`): Faust's stream acknowledges the events it skips
   instead of handing them to the agent (dequeued while the flow is stopped for a rebalance,
   or fetched in an older generation). Their offsets counted as done. Ignored here: they are
   read again after the seek that follows every rebalance.
2. Commits past unprocessed records (`_new_offset`): Faust commits the first run of
   acknowledged offsets even when one offset before it is not acknowledged, and checks
   nothing while the committed offset is 0 or after a revocation (faust-streaming #606).
   Here a run is committed only if it starts where the partition was sought to (the group's
   committed offset) or where the previous run ended.
3. Records fetched before a seek delivered after it (`getmany`): the consumer thread can
   fetch a batch just before Faust seeks a partition to its committed offset, and the drain
   loop only gets to it after the seek: stale records, and the re-read ones then dropped as
   "already read" and committed past. Stream partitions are held back from an assignment to
   the seek; every one is sought explicitly (aiokafka skips offset 0 and does not tell);
   a batch whose partition was sought since before its fetch is dropped, and the partition
   sought to that target again (the batch may have been fetched after the seek). Only the
   seek that ends the assignment's recovery releases them: not the one Faust's `getmany`
   makes when a fetch straddling the rebalance returns with the flow stopped, when tables
   exist (`recovery_seeks_last`), nor one begun before the assignment.
4. Head gaps (`first_read`): the first record read after a seek must be the committed
   offset; if it is not, the partition is read again from there once, and the gap counted
   (`head_gaps`, shown with the agents' offset gaps by the `/kis/` view).
5. Acknowledgements left below a seek target slowed commits down (`forget_acks_below`).
6. Changelog records fetched and never delivered (`getmany`): Faust's `getmany` drops what a
   fetch returned for a partition it does not read now (paused: a standby or recovering
   changelog before its seek, a fetch begun while it was resumed) or when the flow stopped
   meanwhile, after aiokafka's fetch position has moved past those records; changelog
   partitions are not sought again until the next rebalance, so a standby table missed
   them for good (the recovery seeks a standby, then resumes it one request later). They
   are sought back to, unless something sought the partition since the fetch.
7. Seeks from the wrong thread (`_seek`): Faust's `ThreadDelegateConsumer._seek` calls
   aiokafka's `seek` from the event loop's thread while aiokafka fetches in the consumer's
   thread: its `Fetcher.fetched_records` then deleted a partition's fetched records twice
   (a KeyError killed a restarted worker right after "Worker ready"). Every seek here runs in
   the consumer's thread, like Faust's own `seek_to_committed` and `seek_wait`; what it
   records (read offset, seek target, seek count) is set before the seek is queued, so a
   batch fetched after the seek and delivered before the seeking coroutine resumes is
   judged by the new target.
8. Committed offsets: `committed_offset(app, tp)` is the last offset this worker committed for
   a partition, recorded only when the broker accepted the commit (Faust's monitor records
   attempted commits too). The spread agent keeps in its table the quotes a replay from the
   committed offsets still needs (processors/spread.py).
9. Agents' buffers cleared while the flow runs (`resume_flow_control`): mode's
   `FlowControlEvent.resume` empties every managed queue (the agents' channel buffers, the
   changelog queue), and Faust's recovery resumes it twice: when it starts reading the
   changelogs, and again after its seek of the stream partitions (`on_recovery_completed`),
   when the flow has been running all along and records fetched after that seek are
   already in the agents' buffers (the drain loop's read offset past them). A restarted
   worker with a backlog lost whole batches that way (e2e `crash`: a partition never
   committed again, or an agent's "records skipped"). Here a resume clears the queues only
   when the flow was suspended (a rebalance began: what they hold is from before it).
10. Before a commit (`before_commit`): what must be in a changelog before offsets are
   committed, written just before Faust flushes its producer and commits them. The spread
   writes the quotes a replay from those offsets would need there, not one per input.

Each rebalance logs one line: the committed offsets the stream partitions were sought to
and aiokafka's fetch position then; the rest (revocations, re-reads) at debug level.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.tables.manager import TableManager
from faust.transport import consumer as faust_consumer
from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP
from mode.utils.queues import FlowControlEvent

_APPLIED = "_kis_stream_seek_fix"
_COMMITTED = "_kis_committed"
_SOUGHT = "_kis_sought"
_BASE = "_kis_base"
_FIRST = "_kis_first"
_HEAD_GAPS = "_kis_head_gaps"
_FETCHED = "_kis_fetched"
_ASSIGNMENTS = "_kis_assignments"
_BEFORE_COMMIT = "_kis_before_commit"

log = logging.getLogger(__name__)


def head_gaps(app: faust.App) -> int:
    """Times this worker found records missing at the head of a partition (should stay 0).

    Counted when the first record read after a seek lies above the group's committed offset,
    when a commit would skip offsets never acknowledged since then, and when Faust treats
    skipped offsets as done (its gap filling).
    """
    consumer = app.__dict__.get("_consumer")  # (not created here if there is none yet)
    return int(consumer.__dict__.get(_HEAD_GAPS, 0)) if consumer is not None else 0


def _head_gap(consumer: Any, message: str, *args: Any) -> None:
    consumer.__dict__[_HEAD_GAPS] = consumer.__dict__.get(_HEAD_GAPS, 0) + 1
    log.warning(message, *args)


def _position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's fetch position of `tp` (diagnostics only; None if unknown)."""
    try:
        assignment = consumer._thread._ensure_consumer()._subscription.subscription.assignment
        state = assignment.state_value(tp)
        return int(state._position) if state is not None and state._position is not None else None
    except Exception:  # diagnostics never break the consumer
        return None


def _show(offsets: Mapping[Any, Any]) -> str:
    return " ".join(f"{tp.topic}[{tp.partition}]={v}" for tp, v in sorted(offsets.items()))


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset this worker last committed for `tp` (accepted by the broker), if any.

    Offsets committed by another worker of the group are not known here: the value is a
    lower bound of the group's committed offset, which is what a conservative caller needs.
    """
    committed: dict[TP, int] | None = app.tables.__dict__.get(_COMMITTED)
    return committed.get(tp) if committed is not None else None


def before_commit(app: faust.App, callback: Callable[[Mapping[TP, int]], object]) -> None:
    """Call `callback(offsets)` whenever this worker is about to commit `offsets`.

    It runs before Faust flushes its producer and sends the commit, so what it sends is on
    the broker before the offsets are committed (if the commit fails, the last committed
    offsets stand). An exception stops the commit.
    """
    app.__dict__.setdefault(_BEFORE_COMMIT, []).append(callback)


def sought_offset(app: faust.App, tp: TP) -> int | None:
    """Where Faust last sought `tp` to after an assignment (its committed offset then)."""
    sought: dict[TP, int] | None = app.consumer.__dict__.get(_SOUGHT)
    return sought.get(tp) if sought is not None else None


async def read_undelivered_again(
    consumer: Any, fetched: Mapping[Any, Any], delivered: Mapping[Any, int]
) -> list[tuple[Any, int]]:
    """Seek changelog partitions back to the records a fetch returned and Faust dropped.

    `fetched`: the fetch's records per partition; `delivered`: the last offset `getmany`
    handed on per partition. Only where the fetch position is still at or past the end of
    the fetched records (nothing sought the partition since; a seek further on is undone,
    which is safe for a changelog: recovery skips what it has already applied). The seeks.
    """
    changelogs = consumer.app.tables.changelog_topics
    sought: list[tuple[Any, int]] = []
    if consumer.app.should_stop:  # (the worker stops: dropped on purpose)
        return sought
    for tp, records in fetched.items():
        if tp.topic not in changelogs or not records:
            continue
        last = delivered.get(tp)
        if last is not None and last >= records[-1].offset:
            continue  # (all delivered: the usual case)
        dropped = [r.offset for r in records if last is None or r.offset > last]
        position = _position(consumer, tp)
        if position is None or position <= records[-1].offset:
            continue
        key = TP(tp.topic, tp.partition)
        try:
            if key not in consumer.assignment():
                continue
            await consumer.seek(key, dropped[0])
        except Exception as exc:  # (revoked meanwhile, in the consumer's thread)
            log.info("%s: not sought back to %d: %r", key, dropped[0], exc)
            continue
        sought.append((key, dropped[0]))
        log.info("%s: %d records fetched, not delivered: read again", key, len(dropped))
    return sought


def recovery_seeks_last(app: Any) -> bool:
    """True if the table recovery ends with Faust's seek of the stream partitions.

    With tables (and not the aerospike store) `Recovery.on_recovery_completed` resumes the
    stream partitions, then seeks them to their committed offsets, the flow running (the
    recovery resumed it for the changelogs): a fetch in between returns their records from
    wherever they stood. Without tables `Recovery._resume_streams` seeks with the flow still
    stopped, so nothing is read before that seek.
    """
    return bool(app.tables) and str(app.conf.store) != "aerospike:"


def forget_acks_below(consumer: Any, targets: Mapping[Any, int | None]) -> None:
    """Drop acknowledgements of offsets below where a partition was sought to.

    Records delivered between an assignment and Faust's seek to the committed offsets (Faust
    resumes the flow first) leave acknowledgements below the committed offset; Faust's
    commit takes one run of consecutive acknowledged offsets per commit, so such leftovers
    delayed commits by one interval per run (minutes: tests/e2e/test_processors.py saw a
    worker "not catch up"). They are all below what is committed: forgetting them is safe.
    """
    for tp, target in targets.items():
        acked = consumer._acked.get(tp)
        if target is None or target < 0 or not acked:
            continue
        stale = [offset for offset in acked if offset < target]
        if stale:
            acked[:] = [offset for offset in acked if offset >= target]
            consumer._acked_index[tp].difference_update(stale)


def counters(consumer: Any) -> Counter[Any]:
    """Seeks per partition ("*": every partition) since the consumer started."""
    found: Counter[Any] = consumer.__dict__.setdefault("_kis_seeks", Counter())
    return found


def unsought(consumer: Any) -> set[Any]:
    """Stream partitions assigned and not sought to their committed offsets yet."""
    found: set[Any] = consumer.__dict__.setdefault("_kis_unsought", set())
    return found


def bases(consumer: Any) -> dict[Any, int]:
    """Per stream partition: the offset up to which it is done (committed, or run handed
    to a commit); the next run of acknowledged offsets must start there."""
    found: dict[Any, int] = consumer.__dict__.setdefault(_BASE, {})
    return found


def targets_of(consumer: Any) -> dict[Any, int]:
    """Per stream partition: where it was last sought to."""
    found: dict[Any, int] = consumer.__dict__.setdefault("_kis_targets", {})
    return found


def firsts(consumer: Any) -> dict[Any, int]:
    """Per stream partition: the first offset delivered since its last seek."""
    found: dict[Any, int] = consumer.__dict__.setdefault(_FIRST, {})
    return found


def resume_at(consumer: Any, tp: Any, offset: int) -> None:
    """Record that `tp` was sought to `offset`: reading and committing resume there."""
    key = TP(tp.topic, tp.partition)
    bases(consumer)[key] = offset
    targets_of(consumer)[key] = offset
    firsts(consumer).pop(key, None)


def forget(consumer: Any, tp: Any) -> None:
    """`tp` was revoked, or assigned and not sought yet: where it resumes is not known."""
    key = TP(tp.topic, tp.partition)
    bases(consumer).pop(key, None)
    firsts(consumer).pop(key, None)


async def seek_in_consumer_thread(consumer: Any, partition: Any, offset: int) -> None:
    """aiokafka's seek, run in the consumer's thread (where aiokafka fetches).

    aiokafka's consumer is not thread-safe: a seek from the event loop's thread deletes the
    partition's fetched records while `Fetcher.fetched_records` is deleting them in the
    consumer's thread (KeyError, the worker dies). Queued like Faust's own thread calls, in
    order with the fetches: a fetch requested after this seek returns records from after it.
    """
    thread = consumer._thread
    await thread.call_thread(thread.seek, partition, offset)


def apply() -> None:
    """Patch faust's Consumer once per process (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _APPLIED, False):
        return
    original_perform_seek = cls.perform_seek
    original_getmany = cls.getmany
    original_on_commit = TableManager.on_commit
    original_assigned = cls.on_partitions_assigned
    original_revoked = cls.on_partitions_revoked
    original_new_offset = cls._new_offset
    original_add_gap = cls._add_gap
    original_ack = cls.ack
    original_wait_next_records = cls._wait_next_records
    original_commit_offsets = cls._commit_offsets
    original_resume = FlowControlEvent.resume

    async def _commit_offsets(
        self: Any, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        for callback in self.app.__dict__.get(_BEFORE_COMMIT, ()):
            callback(offsets)
        return cast(
            bool,
            await original_commit_offsets(
                self, offsets, start_new_transaction=start_new_transaction
            ),
        )

    def resume_flow_control(self: FlowControlEvent) -> None:
        # mode's resume, only if the flow was suspended: resuming a running flow changes
        # nothing but empties the queues, which then hold what was delivered for the current
        # assignment past the drain loop's read offset (item 9 of the module docstring).
        if not self.is_active():
            original_resume(self)

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        records, active = await original_wait_next_records(self, timeout)
        self.__dict__[_FETCHED] = records  # (for `getmany`: what Faust dropped of it)
        return records, active

    def ack(self: Any, message: Any) -> bool:
        # Faust's stream acknowledges the events it *skips* without handing them to an agent:
        # dequeued while the flow is stopped for a rebalance, or fetched in an older
        # generation. Not processed, they must not count as done (they are read again after
        # the seek that follows every rebalance). See the module docstring.
        app = self.app
        if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
            ignored = self.__dict__.setdefault("_kis_ignored", {})
            low, high, n = ignored.get(message.tp, (message.offset, message.offset, 0))
            ignored[message.tp] = (min(low, message.offset), max(high, message.offset), n + 1)
            return False
        return bool(original_ack(self, message))

    async def on_partitions_revoked(self: Any, revoked: Any) -> None:
        changelogs = set(self.app.tables.changelog_topics)
        streams = [tp for tp in revoked if tp.topic not in changelogs]
        committed = self.app.tables.__dict__.get(_COMMITTED, {})
        if log.isEnabledFor(logging.DEBUG):
            pending = {tp: f"{min(a)}..{max(a)}" for tp in streams if (a := self._acked.get(tp))}
            log.debug(
                "revoked: last commits %s; acknowledged, not committed: %s",
                _show({tp: committed.get(tp) for tp in streams}),
                _show(pending) or "none",
            )
        for tp in streams:
            forget(self, tp)
        await original_revoked(self, revoked)

    async def on_partitions_assigned(self: Any, assigned: Any, generation_id: int = 0) -> None:
        # Faust resumes the stream partitions, then seeks them to their committed offsets:
        # what is fetched in between comes from wherever the consumer stood (a replay the
        # agents mistook for a gap, or acknowledgements below the commit). Hold those
        # partitions back until that seek (changelogs are read by the recovery meanwhile).
        changelogs = set(self.app.tables.changelog_topics)
        held = unsought(self)
        held.clear()
        held.update(tp for tp in assigned if tp.topic not in changelogs)
        self.__dict__[_ASSIGNMENTS] = self.__dict__.get(_ASSIGNMENTS, 0) + 1
        for tp in held:
            forget(self, tp)
        log.debug("assigned (generation %s): %s", generation_id, _show({tp: "" for tp in held}))
        await original_assigned(self, assigned, generation_id)

    async def seek(self: Any, partition: TP, offset: int) -> None:
        # Faust's `Consumer.seek` with everything it and this module record set first: the
        # seek itself runs in the consumer's thread (`_seek`), and records fetched after it
        # can reach the drain loop before this coroutine resumes (Faust sets the read offset
        # after its seek: such records would be dropped as already read).
        counters(self)[partition] += 1
        self._read_offset[TP(partition.topic, partition.partition)] = offset if offset else None
        forget_acks_below(self, {partition: offset})
        if partition.topic not in self.app.tables.changelog_topics:
            resume_at(self, partition, offset)
        await self._seek(partition, offset)

    async def perform_seek(self: Any) -> None:
        counters(self)["*"] += 1  # every partition
        # Faust's getmany seeks when a fetch returns with the flow stopped: a fetch begun
        # before the rebalance returns around the assignment (aiokafka waits for it). With
        # tables that seek comes before the recovery, whose own seek comes last, after it
        # resumed the stream partitions with the flow running. Released early, records read
        # in between were delivered twice, or a first one above the committed offset (records
        # Faust dropped while paused) spent the head check's one re-read, and a later one was
        # counted as a gap. The partitions stay held until the recovery's seek, and those of
        # an assignment made during this seek until its own recovery's.
        assignments = self.__dict__.get(_ASSIGNMENTS, 0)
        releases = self.flow_active or not recovery_seeks_last(self.app)
        targets: dict[Any, int] = {}
        seek_to_committed = self.seek_to_committed

        async def recording() -> Any:
            found = await seek_to_committed()
            targets.update(found)
            return found

        self.seek_to_committed = recording
        changelogs = set(self.app.tables.changelog_topics)
        try:
            await original_perform_seek(self)
            # aiokafka's seek_to_committed does not seek a partition whose committed offset
            # is 0 (or unknown): it stays wherever fetching left it, past the records dropped
            # above as fetched before the seek, which were then never read (inputs lost in
            # tests/e2e/test_processors.py, `two`). Seek those to the start explicitly.
            # Every stream partition is sought once more, explicitly: that marks a batch
            # fetched before (in the consumer's thread) as stale however late the drain
            # loop gets to it (see `getmany`); aiokafka's own seeks above do not.
            # A partition is released as its seek is queued (the seek runs in the consumer's
            # thread, and records fetched after it may be delivered before it returns: held,
            # they were dropped with aiokafka's position past them). What was fetched before
            # the seek is stale by then (the seek count changed: `getmany` drops it).
            for tp, offset in targets.items():
                if tp.topic not in changelogs:
                    key = TP(tp.topic, tp.partition)
                    if releases and self.__dict__.get(_ASSIGNMENTS, 0) == assignments:
                        unsought(self).discard(key)
                    await seek(self, key, offset or 0)
        finally:
            self.__dict__.pop("seek_to_committed", None)  # the class's method again
            if releases and self.__dict__.get(_ASSIGNMENTS, 0) == assignments:
                unsought(self).clear()  # (even if the seek failed: never hold them back)
        sought = self.__dict__.setdefault(_SOUGHT, {})
        sought.update({tp: offset for tp, offset in targets.items() if offset is not None})
        forget_acks_below(self, targets)
        streams = {tp: o for tp, o in targets.items() if tp.topic not in changelogs}
        ignored = self.__dict__.pop("_kis_ignored", {})
        if ignored:
            log.info(
                "acknowledgements of skipped events (offsets low..high: n): %s",
                _show({tp: f"{lo}..{hi}: {n}" for tp, (lo, hi, n) in ignored.items()}),
            )
        log.info(
            "sought to the group's committed offsets (-> fetch position): %s",
            _show({tp: f"{o}->{_position(self, tp)}" for tp, o in streams.items()}),
        )

    async def seek_again(self: Any, tp: Any, offset: int) -> None:
        """A seek from the drain loop: a partition revoked meanwhile is left alone (its
        records are not read any more; an error here would end the drain loop)."""
        try:
            await seek(self, tp, offset)
        except IllegalStateError as exc:  # (aiokafka: not assigned any more)
            log.info("%s: not sought to %d: %r", tp, offset, exc)

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        seeks = counters(self)
        held = unsought(self)
        first = firsts(self)
        changelogs = self.app.tables.changelog_topics
        # Taken before the fetch: the consumer's thread may fetch a batch just before a
        # seek that the drain loop only gets to after it. A stream partition sought since
        # this point is stale in this batch: its records are dropped and it is sought to
        # that target again (if the batch was fetched after the seek, aiokafka's position
        # has moved past the dropped records).
        snapshot = Counter(seeks)
        resought: set[Any] = set()
        read: dict[Any, int] = self.__dict__.setdefault("_kis_read", {})
        self.__dict__.pop(_FETCHED, None)
        delivered: dict[Any, int] = {}
        async for tp, message in original_getmany(self, timeout):
            if tp.topic in changelogs:
                delivered[tp] = message.offset
            else:
                if tp in held:  # a seek is coming
                    continue
                if seeks["*"] != snapshot["*"] or seeks[tp] != snapshot[tp]:
                    if tp not in resought:
                        resought.add(tp)
                        target = targets_of(self).get(tp)
                        if target is not None:
                            await seek_again(self, tp, target)
                    continue
                if tp not in first and not first_read(self, tp, message.offset):
                    # Records missing before this one: read from the committed offset again
                    # (once; if the partition really starts later, e.g. retention deleted
                    # the records, reading goes on from here and the gap is counted).
                    retried = self.__dict__.setdefault("_kis_head_retry", {})
                    base = bases(self)[tp]
                    if retried.get(tp) != base:
                        retried[tp] = base
                        resought.add(tp)
                        await seek_again(self, tp, base)
                        continue
                    bases(self)[tp] = message.offset
                    _head_gap(self, "%s: reading goes on from %d", tp, message.offset)
                last = read.get(tp)
                if last is not None and message.offset != last + 1:
                    log.debug("%s: read %d after %d", tp, message.offset, last)
                read[tp] = message.offset
            yield tp, message
        fetched = self.__dict__.pop(_FETCHED, None)
        if fetched:
            await read_undelivered_again(self, fetched, delivered)

    def first_read(self: Any, tp: Any, offset: int) -> bool:
        """Check the first record read after a seek; False if records are missing before it."""
        base = bases(self).get(tp)
        if base is None:  # not sought yet (in flight from before)
            return True
        firsts(self)[tp] = offset
        if offset > base:
            log.warning(
                "%s: first record read after the seek is %d, the committed offset %d",
                tp,
                offset,
                base,
            )
            return False
        if offset < base:
            log.debug("%s: first record read %d, below the committed offset %d", tp, offset, base)
        return True

    def _new_offset(self: Any, tp: TP) -> int | None:
        # Commit only a run of acknowledged offsets that starts where this worker must
        # resume the partition (the group's committed offset at the seek, then the end of
        # the previous run). Faust commits a run after one unacknowledged offset, or after
        # any number while the committed offset is 0 (faust-streaming #606).
        base = bases(self).get(tp)
        acked = self._acked.get(tp)
        if base is None or not acked:
            found = cast(int | None, original_new_offset(self, tp))
            if found is not None:
                log.info("%s: committing %d with no known base (rebalancing)", tp, found)
            return found
        forget_acks_below(self, {tp: base})
        gap = self._gap.get(tp)
        low = min(acked) if acked else None
        if gap:
            gap_low = min(interval.begin for interval in gap)
            low = gap_low if low is None else min(low, gap_low)
        if low is None:
            return None
        if low > base:
            if self.__dict__.setdefault("_kis_waiting", {}).get(tp) != base:
                self.__dict__["_kis_waiting"][tp] = base
                log.info("%s: not committing past offset %d (not processed yet)", tp, base)
            return None
        offset: int | None = original_new_offset(self, tp)
        if offset is not None:
            bases(self)[tp] = max(base, offset)  # the next run must start there
        return offset

    async def _add_gap(self: Any, tp: TP, offset_from: int, offset_to: int) -> None:
        _head_gap(self, "%s: Faust skips offsets %d..%d as done", tp, offset_from, offset_to)
        await original_add_gap(self, tp, offset_from, offset_to)

    def on_commit(self: Any, offsets: Any) -> None:
        # Faust calls this only when the broker accepted the commit of `offsets`.
        original_on_commit(self, offsets)
        committed = self.__dict__.setdefault(_COMMITTED, {})
        for tp, offset in offsets.items():
            committed[tp] = max(offset, committed.get(tp, offset))
        log.debug("committed %s", _show(offsets))

    FlowControlEvent.resume = resume_flow_control  # type: ignore[method-assign]
    cls.seek = seek
    ThreadDelegateConsumer._seek = seek_in_consumer_thread  # type: ignore[method-assign,assignment]
    cls.on_partitions_assigned = on_partitions_assigned
    cls.on_partitions_revoked = on_partitions_revoked
    TableManager.on_commit = on_commit  # type: ignore[method-assign]
    cls.perform_seek = perform_seek
    cls.getmany = getmany
    cls._new_offset = _new_offset
    cls._commit_offsets = _commit_offsets
    cls._add_gap = _add_gap
    cls.ack = ack
    cls._wait_next_records = _wait_next_records
    setattr(cls, _APPLIED, True)
