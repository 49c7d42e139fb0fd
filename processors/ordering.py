"""Keep each agent's input in offset order across rebalances (a faust-streaming race).

Observed with faust-streaming 0.15.3 + aiokafka 0.14 (tests/e2e, two workers): after a
rebalance, a worker keeping or receiving a partition can be handed records from the fetch
position of the previous generation before Faust seeks the partition back to its committed
offset; the records in between are then never delivered, and the commit that follows skips
them. Every agent therefore checks that a partition's offsets continue where they should:
on the first record after (re)assignment, from the group's committed offset; afterwards,
from the previous record. A record past that point is not processed nor acknowledged; the
partition is sought back to the expected offset and read again from there (records already
buffered past it are skipped too). If the expected offset does not come within
`give_up_s` (it no longer exists: retention, a transaction marker), the later record is
accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from confluent_kafka import Consumer, TopicPartition
from faust.types import TP

log = logging.getLogger(__name__)


class CommittedOffsets:
    """Reads a consumer group's committed offsets on a connection of its own (no joining)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._consumer: Consumer | None = None

    def read(self, topic: str, partition: int) -> int | None:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                }
            )
        (tp,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset if tp.offset >= 0 else None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class InOrder:
    """Per agent: is this record the next one of its partition? (see the module docstring)."""

    def __init__(
        self,
        committed: Callable[[TP], Awaitable[int | None]],
        seek: Callable[[TP, int], Awaitable[None]],
        give_up_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.committed = committed
        self.seek = seek
        self.give_up_s = give_up_s
        self.clock = clock
        self.next: dict[TP, int] = {}
        self.sought: dict[TP, tuple[int, float]] = {}
        """Partition -> (offset sought back to, when)."""
        self.jumps = 0

    def reset(self) -> None:
        """After a rebalance: the next record of each partition is checked against the commit."""
        self.next.clear()
        self.sought.clear()

    async def check(self, tp: TP, offset: int) -> bool:
        """True: process the record. False: skip it (not acknowledged), it will come again."""
        expected = self.next.get(tp)
        if expected is None:
            expected = await self.committed(tp)
            if expected is None:
                expected = offset
        if offset > expected:
            sought = self.sought.get(tp)
            if sought is None or sought[0] != expected:
                self.jumps += 1
                self.sought[tp] = (expected, self.clock())
                self.next[tp] = expected
                log.warning("%s: offset %d, expected %d: reading again", tp, offset, expected)
                await self.seek(tp, expected)
                return False
            if self.clock() - sought[1] < self.give_up_s:
                return False  # buffered before the seek: it comes again in order
            log.warning("%s: offset %d never came; going on from %d", tp, expected, offset)
        self.next[tp] = max(expected, offset + 1)
        return True


def committed_reader(reader: CommittedOffsets) -> Callable[[TP], Awaitable[int | None]]:
    async def committed(tp: TP) -> int | None:
        try:
            return await asyncio.to_thread(reader.read, tp.topic, tp.partition)
        except Exception as exc:  # the broker is unreachable: trust the record
            log.warning("committed offset of %s unavailable: %s", tp, exc)
            return None

    return committed
