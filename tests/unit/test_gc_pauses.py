"""Start-up objects left out of full collections (processors/gc_pauses.py)."""

from __future__ import annotations

import gc

import faust

from processors.gc_pauses import freeze_startup_objects, register


def test_objects_alive_at_start_up_are_frozen_and_garbage_is_not() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    kept = Node()
    Node()  # garbage, in a cycle
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 0
        assert not gc.garbage
        assert not [o for o in gc.get_objects() if isinstance(o, Node)]  # out of the scans
        assert kept.me is kept
    finally:
        gc.unfreeze()
    assert [o for o in gc.get_objects() if isinstance(o, Node)] == [kept]


def test_the_freeze_runs_as_a_task_of_the_worker() -> None:
    app = faust.App("gc-freeze", broker="kafka://127.0.0.1:1", store="memory://")
    before = len(app._app_tasks)
    register(app)
    assert len(app._app_tasks) == before + 1
