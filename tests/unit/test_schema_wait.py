"""Records wait for their writer schema while the registry does not answer (schema_wait)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from processors.schema_wait import SchemaWait


@dataclass
class Message:
    value: bytes | None
    topic: str = "kis.h0stasp0"


def wire(schema_id: int) -> bytes:
    return struct.pack(">bI", 0, schema_id) + b"\x02body"


class Flaky:
    """A registry client that fails its first `failures` lookups, then asks `inner`."""

    def __init__(self, inner: Any, failures: int, error: Exception | None = None) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0
        self.error = error or ConnectionError("Connection refused")

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.inner.get_schema(schema_id, *args, **kwargs) if self.inner else "schema"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_unknown_schema_is_asked_for_until_the_registry_answers_then_never_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Flaky(None, failures=3)
    wait = SchemaWait(registry, backoff_s=0.001)  # type: ignore[arg-type]
    await wait.ready([Message(wire(7)), Message(wire(7))])
    assert registry.calls == 4
    await wait.ready([Message(wire(7))])
    assert registry.calls == 4
    assert wait.waiting_since is None and wait.waited_s > 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("nothing is skipped" in m and "writer schema 7" in m for m in messages)
    assert any("answers again" in m for m in messages)


async def test_the_agent_does_not_go_on_while_the_registry_is_down() -> None:
    registry = Flaky(None, failures=10**9)
    wait = SchemaWait(registry, backoff_s=0.001, max_backoff_s=0.002)  # type: ignore[arg-type]
    task = asyncio.create_task(wait.ready([Message(wire(7))]))
    await asyncio.sleep(0.2)
    assert not task.done() and registry.calls > 3
    waiting = wait.state()["waiting_for_s"]
    assert waiting is not None and waiting >= 0.1
    registry.failures = 0
    await asyncio.wait_for(task, 5)
    state = wait.state()
    assert state["waiting_for_s"] is None and (state["waited_s"] or 0) >= 0.1


async def test_a_schema_the_registry_does_not_have_goes_on_to_the_decoder() -> None:
    registry = Flaky(None, failures=1, error=SchemaRegistryError(404, 40403, "Schema not found"))
    wait = SchemaWait(registry, backoff_s=0.001)  # type: ignore[arg-type]
    await wait.ready([Message(wire(9))])
    await wait.ready([Message(wire(9))])
    assert registry.calls == 1


async def test_values_not_in_the_wire_format_are_left_to_the_decoder() -> None:
    registry = Flaky(None, failures=0)
    wait = SchemaWait(registry)  # type: ignore[arg-type]
    await wait.ready([Message(None), Message(b"\x00ab"), Message(b"\x01abcdef")])
    assert registry.calls == 0


@pytest.mark.parametrize("stream", ["imbalance", "spread"])
async def test_a_book_read_while_the_registry_is_down_is_published_not_skipped(
    stream: str,
) -> None:
    from tests.unit.processors_harness import Harness
    from tests.unit.test_imbalance import book_record

    h = Harness((stream,))
    flaky = Flaky(h.registry, failures=5)
    h.p.schemas.registry = flaky  # type: ignore[assignment]
    h.p.schemas.backoff_s = 0.01
    for decoder in (h.p.decoder, *h.p.decoders.values()):
        decoder.client = flaky  # type: ignore[assignment]
    async with h.running(stream) as ctx:
        book = book_record([(70_000, 10)], [(70_100, 5)], received_at=11)
        await h.put(ctx, h.encode_raw("H0STASP0", book), topic="kis.h0stasp0")
        for _ in range(500):  # (the agent took the record in; it waits for the registry)
            if h.p.stats[stream].counts["consumed"]:
                break
            await asyncio.sleep(0.01)
    assert flaky.calls >= 6
    assert "skipped: undecodable" not in h.p.stats[stream].counts
    assert h.p.stats[stream].counts["consumed"] == 1
    if stream == "imbalance":
        assert [r["received_at"] for r in h.published("kis.book.imbalance")] == [11]


async def test_the_wait_is_over_when_the_last_waiting_agent_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class PerId:
        def __init__(self) -> None:
            self.down = {7, 8}

        def get_schema(self, schema_id: int) -> str:
            if schema_id in self.down:
                raise ConnectionError("Connection refused")
            return "schema"

    registry = PerId()
    wait = SchemaWait(registry, backoff_s=0.001, max_backoff_s=0.002)  # type: ignore[arg-type]
    first = asyncio.create_task(wait.ready([Message(wire(7))]))
    second = asyncio.create_task(wait.ready([Message(wire(8), topic="kis.h0nxasp0")]))
    await asyncio.sleep(0.05)
    registry.down.discard(7)
    await asyncio.wait_for(first, 5)
    assert wait.state()["waiting_for_s"] is not None  # the other agent still waits
    registry.down.clear()
    await asyncio.wait_for(second, 5)
    assert wait.state()["waiting_for_s"] is None
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
