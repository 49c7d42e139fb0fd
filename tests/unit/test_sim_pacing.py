"""Load-mode pacing: owed records follow an absolute schedule (no wall clock: times are given)."""

from __future__ import annotations

import pytest

from simulator.pacing import LoadPacer


def test_late_chunks_are_caught_up_not_lost() -> None:
    pacer = LoadPacer(20_000, now=100.0)
    assert pacer.owed(100.05) == 1_000
    pacer.add(1_000)
    # the next look comes late (a slow chunk): everything since the start is owed, not a tick
    assert pacer.owed(100.25) == 4_000
    pacer.add(4_000)
    assert pacer.owed(101.0) == 15_000
    pacer.add(15_000)
    assert pacer.delivered == 20_000 and pacer.written_off == 0


def test_over_delivery_is_repaid_by_owing_less() -> None:
    pacer = LoadPacer(1_000, now=0.0)
    pacer.add(150)  # a chunk overshoots (events come in whole)
    assert pacer.owed(0.1) == 0
    assert pacer.owed(0.2) == 50


def test_a_server_too_far_behind_writes_off_and_reports_it() -> None:
    pacer = LoadPacer(10_000, now=0.0, max_backlog=0.5)
    assert pacer.owed(3.0) == 5_000
    assert pacer.written_off == 25_000
    pacer.add(5_000)
    assert pacer.owed(3.1) == 1_000  # the schedule goes on from where it gave up
    snap = pacer.snapshot(3.1)
    assert snap["written_off"] == 25_000 and snap["delivered"] == 5_000


def test_a_pause_without_subscribers_leaves_no_debt() -> None:
    pacer = LoadPacer(1_000, now=0.0)
    pacer.add(pacer.owed(1.0))
    pacer.pause(1.0)
    assert pacer.owed(61.0) == 0  # resumed: the schedule restarts now
    assert pacer.owed(61.5) == 500
    assert pacer.written_off == 0
    assert pacer.snapshot(61.5)["active_seconds"] == pytest.approx(1.5)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoadPacer(0, now=0.0)
