"""A buffered reader for the receive side of a websocket-client connection.

websocket-client parses each frame in pure Python with one `recv` syscall (behind a `poll`,
since the socket has a timeout) for the header, one for the extended length and one for the
payload: three or more syscalls and a dozen Python calls per KIS frame. Under load the
server writes many frames per TCP segment, so reading large chunks into a buffer and
slicing frames out of it costs one syscall per many frames. websocket-client still does the
handshake and everything on the send side (subscribe requests, PINGPONG echoes, pongs,
close); this class only replaces `recv_data`, with the same results: (opcode, payload) of
each complete text or binary message, continuation frames joined, WebSocket pings answered
with a pong, pongs skipped, a close frame answered and returned as `(OPCODE_CLOSE, b"")`.
Timeouts and a closed socket raise websocket-client's own exceptions, so callers need not
know which reader they use. (wsaccel, websocket-client's optional accelerator, only speeds
up UTF-8 validation, which the producer skips, and the masking of sent frames.)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from typing import Any

import websocket
from websocket import ABNF

_CHUNK = 1 << 18
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_CONTROL = frozenset({ABNF.OPCODE_CLOSE, ABNF.OPCODE_PING, ABNF.OPCODE_PONG})
_MAX_MESSAGE = 64 << 20
"""A message larger than this is a protocol error (KIS frames are a few KiB)."""


class BufferedConnection:
    """Wraps a connected `websocket.WebSocket`; only `recv_data` differs from it."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self._ws = ws
        if ws.sock is None:
            raise websocket.WebSocketConnectionClosedException("not connected")
        self._sock: socket.socket = ws.sock
        self._buf = b"".join(ws.frame_buffer.recv_buffer)  # normally empty
        ws.frame_buffer.recv_buffer = []
        self._pos = 0
        self._chunk = bytearray(_CHUNK)
        self._chunk_view = memoryview(self._chunk)
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    # --- delegated to websocket-client ---
    def send(self, payload: str, opcode: int = ABNF.OPCODE_TEXT) -> Any:
        return self._ws.send(payload, opcode)

    def pong(self, payload: str | bytes = "") -> Any:
        return self._ws.pong(payload)

    def settimeout(self, timeout: float | None) -> Any:
        return self._ws.settimeout(timeout)

    def close(
        self, status: int = websocket.STATUS_NORMAL, reason: bytes = b"", timeout: float = 3
    ) -> Any:
        return self._ws.close(status, reason, timeout)

    # --- receive ---
    def recv_data(self, control_frame: bool = False) -> tuple[int, bytes]:
        while True:
            frame = self._next_frame()
            if frame is None:
                self._fill()
                continue
            fin, opcode, payload = frame
            if opcode in _CONTROL:
                if opcode == ABNF.OPCODE_PING:
                    # A pong that cannot be sent (the peer is gone) must not end the read:
                    # frames already received are still read, up to the closed socket.
                    with contextlib.suppress(OSError, websocket.WebSocketException):
                        self._ws.pong(payload)
                elif opcode == ABNF.OPCODE_CLOSE:
                    with contextlib.suppress(OSError, websocket.WebSocketException):
                        self._ws.send_close()  # the peer may already be gone
                    return ABNF.OPCODE_CLOSE, payload
                if control_frame:
                    return opcode, payload
                continue
            if opcode == ABNF.OPCODE_CONT:
                if not self._fragment_opcode:
                    raise websocket.WebSocketProtocolException("continuation without a start")
                self._fragments.append(payload)
                if sum(map(len, self._fragments)) > _MAX_MESSAGE:
                    raise websocket.WebSocketProtocolException("message too large")
                if not fin:
                    continue
                opcode, payload = self._fragment_opcode, b"".join(self._fragments)
                self._fragments, self._fragment_opcode = [], 0
                return opcode, payload
            if self._fragment_opcode:
                raise websocket.WebSocketProtocolException("new message inside a fragmented one")
            if not fin:
                self._fragment_opcode, self._fragments = opcode, [payload]
                continue
            return opcode, payload

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        """The next complete frame in the buffer, or None when more bytes are needed."""
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if b0 & 0x70:
            raise websocket.WebSocketProtocolException("reserved bits set (no extension agreed)")
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if available < 4:
                return None
            (length,) = _U16.unpack_from(buf, pos + 2)
            head = 4
        elif length == 127:
            if available < 10:
                return None
            (length,) = _U64.unpack_from(buf, pos + 2)
            head = 10
            if length > _MAX_MESSAGE:
                raise websocket.WebSocketProtocolException("frame too large")
        masked = b1 & 0x80
        if masked:
            head += 4
        end = pos + head + length
        if end > len(buf):
            return None
        payload = buf[pos + head : end]
        if masked:  # servers must not mask, but be lenient
            payload = ABNF.mask(buf[pos + head - 4 : pos + head], payload)
        self._pos = end
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _fill(self) -> None:
        try:
            size = self._sock.recv_into(self._chunk)
        except (TimeoutError, ssl.SSLWantReadError):
            raise websocket.WebSocketTimeoutException("timed out") from None
        if not size:
            raise websocket.WebSocketConnectionClosedException("connection closed by the peer")
        chunk = self._chunk_view[:size].tobytes()  # a fixed buffer: no 256 KiB allocation per read
        self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
