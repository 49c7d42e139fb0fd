"""`kis.frames`: every raw WebSocket message, untouched, as Avro (schemas/frames.avsc).

This runs once per frame on the hot path, so the five-field record is encoded by hand
(Avro binary: zig-zag varints, length-prefixed bytes/strings, union index) rather than
through a generic writer; tests decode it with fastavro against the schema file.
"""

from __future__ import annotations

from functools import cache

from schemas import ROOT

FRAMES_SCHEMA_PATH = ROOT / "frames.avsc"


@cache
def frames_schema_text() -> str:
    return FRAMES_SCHEMA_PATH.read_text()


def _unsigned_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_UNSIGNED = tuple(_unsigned_varint(n) for n in range(1 << 14))
"""Varints of 0..16383 (lengths, sequence numbers): a tuple lookup instead of a loop."""
_LOW14 = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))
"""The two leading bytes of a longer varint, by its low 14 bits (continuation bits set)."""


def _varint(value: int) -> bytes:
    """Avro long: zig-zag, then base-128 varint, 14 bits per step through the tables."""
    n = (value << 1) ^ (value >> 63)
    if n < 1 << 14:
        return _UNSIGNED[n]
    parts = []
    while n >= 1 << 14:  # a receive time in microseconds takes three steps
        parts.append(_LOW14[n & 0x3FFF])
        n >>= 14
    parts.append(_UNSIGNED[n])
    return b"".join(parts)


def encode_frame(
    frame: bytes, received_at: int, session: str, seq: int, tr_id: str | None
) -> bytes:
    """Avro binary body of one `Frame` record (no Confluent header)."""
    session_b = session.encode()
    parts = [
        _varint(len(frame)),
        frame,
        _varint(received_at),
        _varint(len(session_b)),
        session_b,
        _varint(seq),
    ]
    if tr_id is None:
        parts.append(b"\x00")
    else:
        tr_b = tr_id.encode()
        parts += [b"\x02", _varint(len(tr_b)), tr_b]
    return b"".join(parts)


def frame_tr_id(frame: bytes) -> str | None:
    """The tr_id of a data frame (`0|H0STCNT0|001|...`), None for anything else."""
    if len(frame) > 2 and frame[0] in b"01" and frame[1:2] == b"|":
        end = frame.find(b"|", 2, 40)
        if end > 2:
            tr_id = frame[2:end]
            if tr_id.isalnum():
                return tr_id.decode("ascii")
    return None


def frame_key(frame: bytes, tr_id: str | None) -> bytes | None:
    """Partition key: the plain frame's first field (its symbol), so that one symbol's frames
    stay in order in one partition; None when it cannot be read cheaply (the caller then keys
    by session slot)."""
    if tr_id is None or frame[0:1] != b"0":
        return None
    start = frame.find(b"|", 3 + len(tr_id))  # after <enc>|<tr_id>|<count>
    if start < 0:
        return None
    end = frame.find(b"^", start + 1, start + 40)
    if end < 0:
        return None
    key = frame[start + 1 : end]
    return key if key.isalnum() else None
