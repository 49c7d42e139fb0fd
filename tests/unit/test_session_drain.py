"""A failed send does not throw away what the connection had already received.

When the server aborts a connection, the frames it wrote before that stay readable in the
socket's receive buffer; a session that notices the loss on a send (answering PINGPONG,
subscribing) keeps reading and handing them on, then closes, and reports the gap from the
last one it read. The fakes here play such a connection: after ABORT every send fails, while
what is queued behind it is still delivered, up to the end of the stream.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any

import pytest
import websocket

from producer.session import FrameItem
from producer.ws_reader import BufferedConnection
from tests.unit.test_session import PING_TEXT, PLAN, FakeConnection, Harness, ack, data
from tests.unit.test_ws_reader import frame as ws_frame
from tests.unit.test_ws_reader import read_client_frame

ABORT = "ABORT"
"""Script marker: the server aborted here; every send from now on fails."""
EOF = "EOF"
"""Script marker: the end of what the connection holds (the read sees the close)."""
FIRST, SECOND = "s0.r1.1", "s0.r1.2"


class AbortedConnection(FakeConnection):
    """FakeConnection whose sends fail once the reader has passed ABORT in the script."""

    aborted = False
    sends_after_abort = 0

    def _check(self) -> None:
        if self.aborted:
            self.sends_after_abort += 1
            raise BrokenPipeError(32, "Broken pipe")

    def send(self, payload: str, opcode: int = websocket.ABNF.OPCODE_TEXT) -> None:
        self._check()
        super().send(payload, opcode)

    def pong(self, payload: str | bytes = "") -> None:
        self._check()
        super().pong(payload)

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]:
        if self.inbox and self.inbox[0] == ABORT:
            self.inbox.popleft()
            self.aborted = True
        if self.inbox and self.inbox[0] == EOF:
            raise websocket.WebSocketConnectionClosedException("connection closed by the peer")
        return super().recv_data(control_frame)


def aborting_harness(
    scripts: list[list[Any]], first: type[AbortedConnection] | None = None, **config: Any
) -> Harness:
    """Harness whose connections are AbortedConnections (the first one of class `first`)."""
    h = Harness(scripts, pingpong_reply="both", **config)

    def connect(url: str, timeout: float) -> FakeConnection:
        script = h.server.scripts.popleft() if h.server.scripts else ["SILENCE"]
        kind = first if first is not None and not h.server.connections else AbortedConnection
        conn = kind(h.server, script)
        h.server.connections.append(conn)
        return conn

    h.session._connect = connect
    return h


def of(frames: list[FrameItem], connection: str) -> list[FrameItem]:
    return [f for f in frames if f[0] == connection]


def test_frames_received_before_a_failed_pingpong_answer_are_handed_on_before_the_reconnect() -> (
    None
):
    behind = [data("005930", 2), PING_TEXT, data("000660", 3), data("005930", 4)]
    script = [data("005930", 1), ABORT, PING_TEXT, *behind, EOF]
    with aborting_harness([script, [data("005930", 5), "SILENCE"]]) as h:
        h.wait(lambda: len(h.named("gap")) == 1)
        h.wait(lambda: bool(of(h.frames, SECOND)) and of(h.frames, SECOND)[-1][3][:1] == b"0")
    first = h.server.connections[0]
    assert isinstance(first, AbortedConnection) and first.closed
    assert first.sends_after_abort == 1, "nothing more is sent once a send failed"
    data_frames = [f[3] for f in of(h.frames, FIRST) if f[3][:1] == b"0"]
    assert data_frames == [data("005930", n).encode() for n in (1, 2)] + [
        data("000660", 3).encode(),
        data("005930", 4).encode(),
    ]
    connections = [f[0] for f in h.frames]
    assert connections == sorted(connections), "every frame of the lost connection comes first"
    (disconnected,) = h.named("disconnected")
    assert disconnected.reason == "send failed: BrokenPipeError"
    (gap,) = h.named("gap")
    assert gap.gap_from == of(h.frames, FIRST)[-1][2], "the gap starts at the last frame read"


class FailsThirdSubscribe(AbortedConnection):
    """The server aborts as the third registration is asked: what it sent before is queued."""

    def send(self, payload: str, opcode: int = websocket.ABNF.OPCODE_TEXT) -> None:
        if not self.aborted and self.subscribes == 2 and "body" in json.loads(payload):
            self.inbox.extend([data("005930", 1), data("000660", 2), EOF])
            self.aborted = True
        super().send(payload, opcode)


def test_frames_received_before_a_failed_subscribe_are_handed_on_and_no_streaming_is_claimed() -> (
    None
):
    with aborting_harness([[], ["SILENCE"]], FailsThirdSubscribe) as h:
        h.wait(lambda: len(h.named("gap")) == 1)
    lost = of(h.frames, FIRST)
    assert [f[3] for f in lost if f[3][:1] == b"0"] == [
        data("005930", 1).encode(),
        data("000660", 2).encode(),
    ]
    assert sum(1 for f in lost if f[3][:1] == b"{") == 2, "both acks read and handed on"
    assert [e.connection for e in h.named("streaming")] == [SECOND]
    assert [e.tr_key for e in h.named("subscribed") if e.connection == FIRST] == [
        s.tr_key for s in PLAN.subscriptions[:2]
    ]
    (disconnected,) = h.named("disconnected")
    assert disconnected.reason == "send failed: BrokenPipeError"
    (gap,) = h.named("gap")
    assert gap.gap_from == lost[-1][2]
    assert h.server.connections[1].subscribes == len(PLAN.subscriptions)


def test_a_half_open_connection_is_read_until_it_comes_up_empty() -> None:
    script = [ABORT, PING_TEXT, data("005930", 1), "SILENCE"]
    with aborting_harness([script, ["SILENCE"]], silence_timeout_s=0) as h:
        h.wait(lambda: len(h.server.connections) == 2)
    assert [f[3] for f in of(h.frames, FIRST) if f[3][:1] == b"0"] == [data("005930", 1).encode()]
    assert h.named("disconnected")[0].reason == "send failed: BrokenPipeError"


class Flood(AbortedConnection):
    """After ABORT, data keeps arriving for ever (the drain must still end)."""

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]:
        if self.aborted:
            time.sleep(0.001)
            return websocket.ABNF.OPCODE_TEXT, data("005930", 9).encode()
        return super().recv_data(control_frame)


def test_the_drain_is_bounded_in_time() -> None:
    with aborting_harness([[ABORT, PING_TEXT], ["SILENCE"]], Flood, drain_timeout_s=0.2) as h:
        h.wait(lambda: len(h.server.connections) == 2 and len(h.named("gap")) == 1)
    assert of(h.frames, FIRST), "the flood was read while it lasted"
    assert h.named("disconnected")[0].reason == "send failed: BrokenPipeError"


class Gated:
    """A real connection whose reader can be parked, so the server's abort lands unread."""

    def __init__(self, inner: BufferedConnection) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.open.set()
        self.parked = threading.Event()

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]:
        if not self.open.is_set():
            self.parked.set()
            self.open.wait(10)
        return self.inner.recv_data(control_frame)

    def send(self, payload: str, opcode: int = websocket.ABNF.OPCODE_TEXT) -> Any:
        return self.inner.send(payload, opcode)

    def pong(self, payload: str | bytes = "") -> Any:
        return self.inner.pong(payload)

    def settimeout(self, timeout: float | None) -> Any:
        return self.inner.settimeout(timeout)

    def close(self, status: int = 1000, reason: bytes = b"", timeout: float = 1.0) -> Any:
        return self.inner.close(status, reason, timeout)


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux TCP semantics")
def test_a_real_tcp_connection_reset_by_the_server_is_read_to_its_end() -> None:
    """Linux keeps what arrived before a RST readable: the failed pong must not discard it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    gates: list[Gated] = []

    def connect(url: str, timeout: float) -> Gated:
        if gates:
            raise ConnectionRefusedError("once is enough")
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
        ws.sock, ws.connected = socket.create_connection(listener.getsockname(), 5), True
        gates.append(Gated(BufferedConnection(ws)))
        return gates[0]

    h = Harness([], pingpong_reply="both")
    h.session._connect = connect
    behind = [data("005930", n) for n in range(2, 300)]
    try:
        with h:
            server, _ = listener.accept()
            with server:
                server.settimeout(5)
                for _ in PLAN.subscriptions:  # ack each registration request
                    request = json.loads(read_client_frame(server)[1])["body"]["input"]
                    server.sendall(ws_frame(ack(request["tr_id"], request["tr_key"]).encode()))
                h.wait(lambda: h.session.ready)
                gates[0].open.clear()
                h.wait(gates[0].parked.is_set)
                sent = [data("005930", 1), PING_TEXT, *behind]
                server.sendall(b"".join(ws_frame(m.encode()) for m in sent))
                server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client = gates[0].inner._sock
            h.wait(lambda: client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7)
            gates[0].open.set()  # the reset has arrived (TCP_CLOSE): now the pong must fail
            h.wait(lambda: bool(h.named("disconnected")))
    finally:
        listener.close()
    got = [f[3] for f in h.frames if f[3][:1] == b"0"]
    assert got == [m.encode() for m in [data("005930", 1), *behind]]
    disconnected = h.named("disconnected")[0]  # later ones: the refused reconnects
    assert (disconnected.reason or "").startswith("send failed: "), disconnected.reason
    assert disconnected.gap_from == h.frames[-1][2]
