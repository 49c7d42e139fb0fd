"""The buffered WebSocket reader returns what websocket-client's own `recv_data` would."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
import websocket
from websocket import ABNF

from producer.ws_reader import BufferedConnection


def frame(payload: bytes, opcode: int = ABNF.OPCODE_TEXT, *, fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    return ABNF(int(fin), 0, 0, 0, opcode, 0, payload).format()


def masked_frame(payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    head = bytes([0x81, 0x80 | len(payload)])
    return head + mask + ABNF.mask(mask, payload)


Pair = tuple[BufferedConnection, websocket.WebSocket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    ours, server = socket.socketpair()
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
    ws.sock, ws.connected = ours, True
    ws.settimeout(0.2)
    server.settimeout(2)
    try:
        yield BufferedConnection(ws), ws, server
    finally:
        ours.close()
        server.close()


def read_client_frame(server: socket.socket) -> tuple[int, bytes]:
    """One (masked) frame the client sent: (opcode, unmasked payload)."""
    head = server.recv(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", server.recv(2))
    mask = server.recv(4)
    payload = b""
    while len(payload) < length:
        payload += server.recv(length - len(payload))
    return head[0] & 0x0F, ABNF.mask(mask, payload)


def test_many_frames_in_one_read_each_returned_whole(pair: Pair) -> None:
    conn, _, server = pair
    payloads = [f"0|H0STCNT0|001|{i}^x".encode() for i in range(50)]
    server.sendall(b"".join(frame(p) for p in payloads))
    assert [conn.recv_data() for _ in payloads] == [(ABNF.OPCODE_TEXT, p) for p in payloads]


def test_frame_split_across_reads_and_timeouts(pair: Pair) -> None:
    conn, _, server = pair
    big = b"1|H0STASP0|002|" + b"9" * 70_000  # 64-bit length form
    mid = b"x" * 300  # 16-bit length form
    data = frame(mid) + frame(big, ABNF.OPCODE_BINARY)
    server.sendall(data[:1])
    with pytest.raises(websocket.WebSocketTimeoutException):
        conn.recv_data()
    server.sendall(data[1:3])
    with pytest.raises(websocket.WebSocketTimeoutException):
        conn.recv_data()
    server.sendall(data[3:400])
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, mid)
    with pytest.raises(websocket.WebSocketTimeoutException):
        conn.recv_data()
    server.sendall(data[400:])
    assert conn.recv_data() == (ABNF.OPCODE_BINARY, big)


def test_fragments_joined_with_a_ping_between_them_answered(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(
        frame(b"0|H0STCNT0|", fin=False)
        + frame(b"hello", ABNF.OPCODE_PING)
        + frame(b"001|", ABNF.OPCODE_CONT, fin=False)
        + frame(b"", ABNF.OPCODE_PONG)
        + frame(b"005930^1", ABNF.OPCODE_CONT)
    )
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"0|H0STCNT0|001|005930^1")
    assert read_client_frame(server) == (ABNF.OPCODE_PONG, b"hello")


def test_control_frames_returned_when_asked(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(frame(b"p", ABNF.OPCODE_PING))
    assert conn.recv_data(control_frame=True) == (ABNF.OPCODE_PING, b"p")


def test_close_is_answered_and_returned(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(frame(struct.pack(">H", 1000), ABNF.OPCODE_CLOSE))
    opcode, _ = conn.recv_data()
    assert opcode == ABNF.OPCODE_CLOSE
    assert read_client_frame(server)[0] == ABNF.OPCODE_CLOSE


def test_peer_gone_raises_closed(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(frame(b"last"))
    server.shutdown(socket.SHUT_WR)
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"last")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        conn.recv_data()


def test_frames_after_a_ping_whose_pong_fails_are_still_read(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(frame(b"first") + frame(b"hi", ABNF.OPCODE_PING) + frame(b"a") + frame(b"b"))
    server.close()  # gone: the pong cannot be sent, what was received can still be read
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"first")
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"a")
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"b")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        conn.recv_data()


def test_masked_server_frame_is_unmasked(pair: Pair) -> None:
    conn, _, server = pair
    server.sendall(masked_frame(b"0|H0STCNT0|001|abc"))
    assert conn.recv_data() == (ABNF.OPCODE_TEXT, b"0|H0STCNT0|001|abc")


@pytest.mark.parametrize(
    "data",
    [
        frame(b"x", ABNF.OPCODE_CONT),  # continuation without a start
        frame(b"a", fin=False) + frame(b"b"),  # a new message inside a fragmented one
        bytes([0xC1, 0x01]) + b"x",  # RSV1 (compression) that was never negotiated
    ],
)
def test_protocol_errors_raise(pair: Pair, data: bytes) -> None:
    conn, _, server = pair
    server.sendall(data)
    with pytest.raises(websocket.WebSocketProtocolException):
        conn.recv_data()
        conn.recv_data()


def test_sends_go_through_websocket_client(pair: Pair) -> None:
    conn, _, server = pair
    conn.send('{"header": {}}')
    assert read_client_frame(server) == (ABNF.OPCODE_TEXT, b'{"header": {}}')
    conn.pong(b"abc")
    assert read_client_frame(server) == (ABNF.OPCODE_PONG, b"abc")
