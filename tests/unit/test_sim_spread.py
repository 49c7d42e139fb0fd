"""Load mode spreads a chunk's frames over the time it stands for instead of one burst."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from simulator.market import GenRecord
from simulator.protocol import Delivery, Session
from simulator.server import SimConfig, SimulatorServer


class FakeWs:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[float, str]] = []

    async def send_str(self, payload: str) -> None:
        self.sent.append((self.loop.time(), payload))

    async def send_bytes(self, payload: bytes) -> None:
        self.sent.append((self.loop.time(), payload.decode()))


def subscribed_server(session: Session, keys: list[str]) -> SimulatorServer:
    server = SimulatorServer(SimConfig())
    for key in keys:
        sub = ("H0STCNT0", key)
        session.subs[sub] = "H0STCNT0"
        server.registry.subscribers.setdefault(sub, {})[session] = "H0STCNT0"
    return server


def records(keys: list[str], per_key: int) -> list[GenRecord]:
    width = 46
    out = []
    for i in range(per_key):
        for key in keys:
            out.append(GenRecord(len(out), "H0STCNT0", key, [key] + [str(i)] * (width - 1)))
    return out


def queued(session: Session) -> list[tuple[str | bytes, Delivery | None]]:
    items = []
    while not session.queue.empty():
        items.append(session.queue.get_nowait())
    return items


def test_spread_makes_frames_due_evenly_over_the_chunk_in_framing_order() -> None:
    async def run() -> list[tuple[str | bytes, Delivery | None]]:
        session = Session("s1")
        server = subscribed_server(session, ["005930", "000660", "035420", "005380"])
        delivered = server._dispatch(records(["005930", "000660", "035420", "005380"], 25),
                                     spread=0.1, start=50.0)  # fmt: skip
        assert delivered == 100
        return queued(session)

    items = asyncio.run(run())
    dues = [d.due for _, d in items if d is not None]
    assert len(dues) == 12  # 25 records per key in frames of at most 10: 3 frames x 4 keys
    assert dues[0] == 50.0 and dues[-1] < 50.1
    steps = [b - a for a, b in itertools.pairwise(dues)]
    assert all(abs(s - 0.1 / 12) < 1e-9 for s in steps)


def test_without_spread_frames_are_due_at_once() -> None:
    async def run() -> list[tuple[str | bytes, Delivery | None]]:
        session = Session("s1")
        server = subscribed_server(session, ["005930"])
        server._dispatch(records(["005930"], 30))
        return queued(session)

    assert {d.due for _, d in asyncio.run(run()) if d is not None} == {0.0}


def test_writer_holds_each_frame_until_it_is_due_and_keeps_the_order() -> None:
    async def run() -> tuple[float, list[tuple[float, str]], Any]:
        loop = asyncio.get_running_loop()
        ws = FakeWs(loop)
        session = Session("s1", ws)
        server = subscribed_server(session, ["005930"])
        start = loop.time()
        for index, offset in enumerate((0.0, 0.03, 0.06, 0.09)):
            delivery = Delivery("H0STCNT0", "005930", None, None, due=start + offset)
            session.queue.put_nowait((f"frame{index}", delivery))
        session.queue.put_nowait(("ack", None))  # system messages follow in order
        writer = asyncio.create_task(server._writer(session))
        while len(ws.sent) < 5:
            await asyncio.sleep(0.01)
        writer.cancel()
        return start, ws.sent, server

    start, sent, server = asyncio.run(run())
    assert [payload for _, payload in sent] == ["frame0", "frame1", "frame2", "frame3", "ack"]
    for (at, _), offset in zip(sent, (0.0, 0.03, 0.06, 0.09), strict=False):
        assert at >= start + offset - SimConfig.load_spread_granule
    assert server.frames_by_tr["H0STCNT0"] == 4
