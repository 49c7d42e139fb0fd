"""A per-message cost of faust-streaming 0.15.3 (pinned) removed: four tasks per record.

Faust's consumer hands every fetched record to the conductor through
`Service.wait_first(callback(message), suspend_flow.wait())`, which wraps the callback, the
suspend-flow wait and the service's stopped and crashed waits in four new tasks, waits for
the first with `asyncio.wait` and cancels the other three: per record four tasks, their
cancellations and several event-loop turns (about a third of the consumer's cost per record
in the profile of docs/benchmarks.md). The callback almost always finishes without waiting
(it puts the event on the agent's buffer; it waits only when that buffer is full).

The patch runs the callback's first step inline: if it finishes there (the usual case), the
result is the one `wait_first` would have returned and no task is created. If it has to
wait (full buffer, paused flow) or the flow is suspended, the stopped or crashed flag is
set, everything goes through the original `wait_first`, the started callback continuing in
a task exactly where it stopped, so pausing and rebalancing behave as before.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport import consumer as faust_consumer
from mode.services import WaitResults

_APPLIED = "_kis_stream_inline_deliver"


@types.coroutine
def _continue(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Drive a coroutine that has already run to its first suspension (a trampoline).

    `waiting_on` is what its first step yielded (a future, or None for a bare yield): it is
    handed to the task first, then values and exceptions are passed through both ways.
    """
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation or an error thrown in by the task
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                return done.value


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """An awaitable that finishes `coro` after its first step yielded `waiting_on`."""
    return await _continue(coro, waiting_on)


async def deliver_inline(service: Any, original: Any, *coros: Any, timeout: Any = None) -> Any:
    """`wait_first(deliver, suspended)` with the deliver coroutine's first step run inline."""
    if (
        len(coros) != 2
        or timeout is not None
        or not all(inspect.iscoroutine(c) for c in coros)
        or service.suspend_flow.is_set()
        or service._stopped.is_set()
        or service._crashed.is_set()
    ):
        return await original(service, *coros, timeout=timeout)
    deliver, suspended = coros
    try:
        waiting_on = deliver.send(None)
    except StopIteration as done:
        suspended.close()
        return WaitResults([deliver], [done.value], False)
    except BaseException:
        suspended.close()
        raise
    return await original(service, resume(deliver, waiting_on), suspended)


def apply() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _APPLIED, False):
        return
    original = cls.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        return await deliver_inline(self, original, *coros, timeout=timeout)

    cls.wait_first = wait_first
    setattr(cls, _APPLIED, True)
