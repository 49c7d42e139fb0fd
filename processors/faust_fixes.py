"""A fix for faust-streaming 0.15.3 (pinned): records lost after a seek during a rebalance.

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
from collections.abc import AsyncIterator
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP

_APPLIED = "_kis_stream_seek_fix"


def apply() -> None:
    """Patch faust's Consumer once per process (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _APPLIED, False):
        return
    original_seek = cls.seek
    original_perform_seek = cls.perform_seek
    original_getmany = cls.getmany

    def counters(self: Any) -> Counter[Any]:
        seeks: Counter[Any] | None = self.__dict__.get("_kis_seeks")
        if seeks is None:
            seeks = self.__dict__["_kis_seeks"] = Counter()
        return seeks

    async def seek(self: Any, partition: TP, offset: int) -> None:
        counters(self)[partition] += 1
        await original_seek(self, partition, offset)

    async def perform_seek(self: Any) -> None:
        counters(self)["*"] += 1  # every partition
        await original_perform_seek(self)

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        seeks = counters(self)
        snapshot: Counter[Any] | None = None
        async for tp, message in original_getmany(self, timeout):
            if snapshot is None:  # the batch is in hand: seeks from now on make it stale
                snapshot = Counter(seeks)
            if seeks["*"] != snapshot["*"] or seeks[tp] != snapshot[tp]:
                continue
            yield tp, message

    cls.seek = seek
    cls.perform_seek = perform_seek
    cls.getmany = getmany
    setattr(cls, _APPLIED, True)
