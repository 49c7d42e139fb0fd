"""The per-agent offset-gap watch (faust-streaming could skip records after a rebalance)."""

from __future__ import annotations

import pytest
from faust.types import TP

from processors.ordering import InOrder

TP0, TP1 = TP("kis.h0stasp0", 0), TP("kis.h0stasp0", 1)


def test_consecutive_and_repeated_offsets_are_fine() -> None:
    guard = InOrder()
    assert [guard.check(TP0, o) for o in (5, 6, 7, 6, 7, 8)] == [True] * 6
    assert guard.check(TP1, 100) is True  # each partition has its own sequence
    assert guard.gaps == 0


def test_a_gap_is_reported_and_the_sequence_goes_on() -> None:
    guard = InOrder()
    assert guard.check(TP0, 5) is True
    assert guard.check(TP0, 9) is False  # 6..8 never reached the agent
    assert guard.check(TP0, 10) is True
    assert guard.gaps == 1


def test_a_rebalance_starts_new_sequences() -> None:
    guard = InOrder()
    guard.check(TP0, 5)
    guard.reset()
    assert guard.check(TP0, 50) is True  # resumed at the committed offset, wherever it is


def test_a_run_of_consecutive_offsets_checks_as_each_of_them() -> None:
    runs = [(5, 9), (10, 12), (11, 14), (20, 21), (22, 22)]
    one, each = InOrder(), InOrder()
    for first, last in runs:
        ok = one.check_run(TP0, first, last, last - first + 1)
        assert ok == all([each.check(TP0, o) for o in range(first, last + 1)])
        assert one.next == each.next
    assert one.gaps == each.gaps == 1  # 15..19


def test_a_run_must_be_consecutive() -> None:
    with pytest.raises(ValueError):
        InOrder().check_run(TP0, 5, 9, 4)
