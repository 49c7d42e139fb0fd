"""The per-agent offset-order guard (works around a faust-streaming rebalance race)."""

from __future__ import annotations

from faust.types import TP

from processors.ordering import InOrder

TP0 = TP("kis.h0stasp0", 0)


class Fake:
    def __init__(self, committed: int | None) -> None:
        self.committed_offset = committed
        self.seeks: list[tuple[TP, int]] = []
        self.now = 0.0
        self.guard = InOrder(self.committed, self.seek, give_up_s=10, clock=lambda: self.now)

    async def committed(self, tp: TP) -> int | None:
        return self.committed_offset

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_records_in_order_pass() -> None:
    fake = Fake(committed=5)
    assert [await fake.guard.check(TP0, o) for o in (5, 6, 7)] == [True, True, True]
    assert fake.seeks == []


async def test_a_first_record_past_the_committed_offset_is_read_again_from_it() -> None:
    fake = Fake(committed=5)
    assert await fake.guard.check(TP0, 83) is False  # Faust's stale fetch position
    assert await fake.guard.check(TP0, 84) is False  # already buffered: skipped too
    assert fake.seeks == [(TP0, 5)]
    assert [await fake.guard.check(TP0, o) for o in (5, 6)] == [True, True]
    assert fake.guard.jumps == 1


async def test_a_jump_is_read_again_and_accepted_only_if_the_gap_is_real() -> None:
    fake = Fake(committed=None)
    assert await fake.guard.check(TP0, 10) is True  # no commit yet: the first record is it
    assert await fake.guard.check(TP0, 12) is False
    assert fake.seeks == [(TP0, 11)]
    fake.now = 5.0
    assert await fake.guard.check(TP0, 12) is False  # still waiting for 11
    fake.now = 11.0
    assert await fake.guard.check(TP0, 12) is True  # 11 never came (retention, a marker)
    assert await fake.guard.check(TP0, 13) is True
    assert fake.seeks == [(TP0, 11)]


async def test_redelivered_records_pass_and_reset_rechecks_the_commit() -> None:
    fake = Fake(committed=0)
    assert [await fake.guard.check(TP0, o) for o in (0, 1, 2, 1, 2, 3)] == [True] * 6
    fake.guard.reset()
    fake.committed_offset = 2
    assert await fake.guard.check(TP0, 2) is True
    assert fake.seeks == []
