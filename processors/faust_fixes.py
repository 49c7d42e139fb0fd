"""Fixes for faust-streaming 0.15.3 (pinned), and what Faust does not tell its agents.

1. Records lost after a seek during a rebalance (below).
2. Records fetched between an assignment and Faust's seek to the committed offsets were
   delivered (a replay from wherever the consumer stood): held back until that seek, which
   now also seeks partitions committed at offset 0 (aiokafka skips those: records dropped
   as stale were then lost).
   Acknowledgements left below a seek target slowed commits down (`forget_acks_below`).
3. Committed offsets: `committed_offset(app, tp)` is the last offset this worker committed for
   a partition, recorded only when the broker accepted the commit (Faust's monitor records
   attempted commits too). The spread agent keeps in its table the quotes a replay from the
   committed offsets still needs (processors/spread.py).

Records lost after a seek during a rebalance:

Faust's consumer drains each fetched batch in a loop that records, per partition, the
offset it has read (`_read_offset`) and later drops any record below it. When a partition
is sought back (Faust's own seek to the committed offsets after a rebalance, or ours), the
rest of a batch fetched *before* the seek keeps being drained and pushes `_read_offset`
past the seek target again; the records read again from the target are then dropped as
"already read" and never reach the agents, and later commits skip them. Seen in
tests/e2e/test_processors.py on a worker restarted after SIGKILL and on a second worker
joining (records missing from every derived stream).

The fix: count seeks per partition; a batch stops delivering a partition's records once
that partition has been sought since the batch was fetched (aiokafka has already dropped
its buffer and moved the position to the target, so they are fetched again in order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import faust
from faust.tables.manager import TableManager
from faust.transport import consumer as faust_consumer
from faust.types import TP

_APPLIED = "_kis_stream_seek_fix"
_COMMITTED = "_kis_committed"
_SOUGHT = "_kis_sought"


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset this worker last committed for `tp` (accepted by the broker), if any.

    Offsets committed by another worker of the group are not known here: the value is a
    lower bound of the group's committed offset, which is what a conservative caller needs.
    """
    committed: dict[TP, int] | None = app.tables.__dict__.get(_COMMITTED)
    return committed.get(tp) if committed is not None else None


def sought_offset(app: faust.App, tp: TP) -> int | None:
    """Where Faust last sought `tp` to after an assignment (its committed offset then)."""
    sought: dict[TP, int] | None = app.consumer.__dict__.get(_SOUGHT)
    return sought.get(tp) if sought is not None else None


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


def apply() -> None:
    """Patch faust's Consumer once per process (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _APPLIED, False):
        return
    original_seek = cls.seek
    original_perform_seek = cls.perform_seek
    original_getmany = cls.getmany
    original_on_commit = TableManager.on_commit
    original_assigned = cls.on_partitions_assigned

    def counters(self: Any) -> Counter[Any]:
        seeks: Counter[Any] | None = self.__dict__.get("_kis_seeks")
        if seeks is None:
            seeks = self.__dict__["_kis_seeks"] = Counter()
        return seeks

    def unsought(self: Any) -> set[Any]:
        found: set[Any] | None = self.__dict__.get("_kis_unsought")
        if found is None:
            found = self.__dict__["_kis_unsought"] = set()
        return found

    async def on_partitions_assigned(self: Any, assigned: Any, generation_id: int = 0) -> None:
        # Faust resumes the stream partitions, then seeks them to their committed offsets:
        # what is fetched in between comes from wherever the consumer stood (a replay the
        # agents mistook for a gap, or acknowledgements below the commit). Hold those
        # partitions back until that seek (changelogs are read by the recovery meanwhile).
        changelogs = set(self.app.tables.changelog_topics)
        held = unsought(self)
        held.clear()
        held.update(tp for tp in assigned if tp.topic not in changelogs)
        await original_assigned(self, assigned, generation_id)

    async def seek(self: Any, partition: TP, offset: int) -> None:
        counters(self)[partition] += 1
        await original_seek(self, partition, offset)
        unsought(self).discard(partition)
        forget_acks_below(self, {partition: offset})

    async def perform_seek(self: Any) -> None:
        counters(self)["*"] += 1  # every partition
        targets: dict[Any, int] = {}
        seek_to_committed = self.seek_to_committed

        async def recording() -> Any:
            found = await seek_to_committed()
            targets.update(found)
            return found

        self.seek_to_committed = recording
        try:
            await original_perform_seek(self)
            # aiokafka's seek_to_committed does not seek a partition whose committed offset
            # is 0 (or unknown): it stays wherever fetching left it, past the records dropped
            # above as fetched before the seek, which were then never read (inputs lost in
            # tests/e2e/test_processors.py, `two`). Seek those to the start explicitly.
            changelogs = set(self.app.tables.changelog_topics)
            for tp, offset in targets.items():
                if not offset and tp.topic not in changelogs:
                    await seek(self, TP(tp.topic, tp.partition), 0)
        finally:
            self.__dict__.pop("seek_to_committed", None)  # the class's method again
            unsought(self).clear()  # (even if the seek failed: never hold partitions back)
        sought = self.__dict__.setdefault(_SOUGHT, {})
        sought.update({tp: offset for tp, offset in targets.items() if offset is not None})
        forget_acks_below(self, targets)

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        seeks = counters(self)
        held = unsought(self)
        snapshot: Counter[Any] | None = None
        async for tp, message in original_getmany(self, timeout):
            if snapshot is None:  # the batch is in hand: seeks from now on make it stale
                snapshot = Counter(seeks)
            if seeks["*"] != snapshot["*"] or seeks[tp] != snapshot[tp] or tp in held:
                continue
            yield tp, message

    def on_commit(self: Any, offsets: Any) -> None:
        # Faust calls this only when the broker accepted the commit of `offsets`.
        original_on_commit(self, offsets)
        committed = self.__dict__.setdefault(_COMMITTED, {})
        for tp, offset in offsets.items():
            committed[tp] = max(offset, committed.get(tp, offset))

    cls.seek = seek
    cls.on_partitions_assigned = on_partitions_assigned
    TableManager.on_commit = on_commit  # type: ignore[method-assign]
    cls.perform_seek = perform_seek
    cls.getmany = getmany
    setattr(cls, _APPLIED, True)
