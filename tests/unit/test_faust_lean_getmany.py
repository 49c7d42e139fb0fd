"""`lean_getmany` (processors/faust_speed.py) yields exactly what Faust's `getmany` yields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from processors import faust_speed


class _Consumer:
    """What Faust's `getmany` reads of its consumer."""

    def __init__(self, records: dict[TP, list[Any]], active: set[TP] | None) -> None:
        self.records, self.active = records, active
        self.app = SimpleNamespace(
            consumer_generation_id=1, monitor=SimpleNamespace(tp_end_offsets={})
        )
        self.app.monitor.track_tp_end_offset = self._track
        self.should_stop = False
        self.flow_active = True
        self.scheduler = DefaultSchedulingStrategy()  # type: ignore[abstract]
        self._buffered_partitions: set[TP] = set()
        self.highwaters = 0
        self.log = SimpleNamespace(dev=lambda *a, **k: None, warning=lambda *a, **k: None)

    def _track(self, tp: TP, offset: int) -> None:
        self.app.monitor.tp_end_offsets[tp] = offset

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.records, self.active

    def highwater(self, tp: TP) -> int:
        self.highwaters += 1
        return 1_000 + tp.partition

    def _to_message(self, tp: TP, record: Any) -> Any:
        if record == "rebalance":
            self.app.consumer_generation_id += 1
        return (tp, record)


async def _drain(getmany: Any, consumer: _Consumer) -> list[Any]:
    found = []
    iterator: AsyncIterator[Any] = getmany(consumer, 1.0)
    async for item in iterator:
        found.append(item)
    return found


def _records() -> dict[TP, list[Any]]:
    return {
        TP("a", 0): [f"a0-{i}" for i in range(5)],
        TP("a", 1): [f"a1-{i}" for i in range(3)],
        TP("b", 0): ["b0-0", "b0-1", "b0-2", "rebalance", "b0-4"],
        TP("c", 2): [f"c2-{i}" for i in range(4)],
    }


@pytest.mark.parametrize("active", [None, {TP("a", 0), TP("b", 0)}])
async def test_same_records_in_the_same_order_and_end_offsets(active: set[TP] | None) -> None:
    faust_one, lean_one = _Consumer(_records(), active), _Consumer(_records(), active)
    expected = await _drain(faust_speed._FAUST_GETMANY, faust_one)
    got = await _drain(faust_speed.lean_getmany, lean_one)
    assert got == expected and len(got) > 3  # (stopped at the generation change)
    assert lean_one.app.monitor.tp_end_offsets == faust_one.app.monitor.tp_end_offsets
    assert lean_one.highwaters < faust_one.highwaters  # once per partition, not per record


async def test_a_stopped_flow_seeks_as_faust_does() -> None:
    for getmany in (faust_speed._FAUST_GETMANY, faust_speed.lean_getmany):
        consumer = _Consumer(_records(), None)
        consumer.flow_active = False
        seeks: list[int] = []

        async def perform_seek(seeks: list[int] = seeks) -> None:
            seeks.append(1)

        consumer.perform_seek = perform_seek  # type: ignore[attr-defined]
        assert await _drain(getmany, consumer) == [] and seeks == [1]


def test_only_faust_s_own_getmany_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    cls: Any = faust_speed.faust_consumer.Consumer
    monkeypatch.setattr(cls, "getmany", faust_speed._FAUST_GETMANY)
    monkeypatch.delattr(cls, faust_speed._LEAN_APPLIED, raising=False)
    wrapper = object()
    monkeypatch.setattr(cls, "getmany", wrapper)
    assert faust_speed.apply_lean_getmany() is False and cls.getmany is wrapper
    monkeypatch.setattr(cls, "getmany", faust_speed._FAUST_GETMANY)
    assert faust_speed.apply_lean_getmany() is True and cls.getmany is faust_speed.lean_getmany
