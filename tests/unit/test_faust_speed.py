"""Faust's per-record `wait_first` with the deliver step run inline (processors/faust_speed.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from processors.faust_speed import deliver_inline, resume


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


class _Service:
    """What `deliver_inline` reads of Faust's consumer, and a recording `wait_first`."""

    def __init__(self) -> None:
        self.suspend_flow, self._stopped, self._crashed = _Flag(), _Flag(), _Flag()
        self.slow_path = 0

    async def original(self, service: Any, *coros: Any, timeout: Any = None) -> Any:
        self.slow_path += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return [t.result() for t in done]


async def _never() -> None:
    await asyncio.Event().wait()


def test_a_callback_that_does_not_wait_runs_inline() -> None:
    service, ran = _Service(), []

    async def deliver() -> str:
        ran.append(1)
        return "delivered"

    async def main() -> Any:
        return await deliver_inline(service, service.original, deliver(), _never())

    results = asyncio.run(main())
    assert results.done and results.results == ["delivered"] and not results.stopped
    assert ran == [1] and service.slow_path == 0


def test_a_callback_that_waits_finishes_in_the_original_path() -> None:
    service, steps = _Service(), []

    async def deliver(gate: asyncio.Future[str]) -> str:
        steps.append("before")
        value = await gate
        await asyncio.sleep(0)  # a bare yield as well as a future
        steps.append("after " + value)
        return "delivered"

    async def main() -> Any:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, gate.set_result, "open")
        return await deliver_inline(service, service.original, deliver(gate), _never())

    assert asyncio.run(main()) == ["delivered"]
    assert steps == ["before", "after open"] and service.slow_path == 1


def test_suspended_flow_uses_the_original_path_from_the_start() -> None:
    service, ran = _Service(), []
    service.suspend_flow.value = True

    async def deliver() -> str:
        ran.append(1)
        return "x"

    async def main() -> Any:
        return await deliver_inline(service, service.original, deliver(), _never())

    assert asyncio.run(main()) == ["x"] and service.slow_path == 1


def test_errors_and_cancellation_reach_the_callback() -> None:
    async def failing() -> None:
        raise ValueError("bad message")

    async def inline_error() -> None:
        service = _Service()
        await deliver_inline(service, service.original, failing(), _never())

    with pytest.raises(ValueError, match="bad message"):
        asyncio.run(inline_error())

    cleaned: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally ran")

    async def cancel_resumed() -> None:
        coro = waits_forever()
        waiting_on = coro.send(None)
        task = asyncio.ensure_future(resume(coro, waiting_on))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_resumed())
    assert cleaned == ["finally ran"]
