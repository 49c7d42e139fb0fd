"""Watch each agent's input for offset gaps (a faust-streaming rebalance race, see below).

faust-streaming 0.15.3 can skip records around a rebalance (processors/faust_fixes.py
patches the cause we found). Every agent still checks that, within a generation, each
partition's offsets follow each other; a gap is logged and counted (`offset gaps` in the
`/kis/` view) so that a loss cannot go unnoticed. Gaps are not repaired here: seeking a
partition back from inside an agent races with Faust's own seeks.
"""

from __future__ import annotations

import logging

from faust.types import TP

log = logging.getLogger(__name__)


class InOrder:
    """Per agent: the next offset expected per partition since the last (re)assignment."""

    def __init__(self) -> None:
        self.next: dict[TP, int] = {}
        self.gaps = 0

    def reset(self) -> None:
        """After a rebalance: the next record of each partition starts a new sequence."""
        self.next.clear()

    def check(self, tp: TP, offset: int) -> bool:
        """Record the offset; False (logged) if records were skipped before it."""
        expected = self.next.get(tp)
        self.next[tp] = max(offset + 1, expected or 0)
        if expected is not None and offset > expected:
            self.gaps += 1
            log.warning("%s: offset %d follows %d: records skipped", tp, offset, expected - 1)
            return False
        return True

    def check_run(self, tp: TP, first: int, last: int, count: int) -> bool:
        """`check` of `count` records of one partition with the consecutive offsets `first`
        to `last` (the usual batch), at the cost of one check."""
        if last - first + 1 != count:
            raise ValueError("not a run of consecutive offsets")
        ok = self.check(tp, first)
        self.next[tp] = max(last + 1, self.next[tp])
        return ok
