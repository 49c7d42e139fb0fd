"""An on-disk, append-only spool of Kafka messages the broker has not acknowledged.

When the broker is unreachable long enough to fill the producer's bounded memory, records
go here instead of being dropped; they are read back in order when the broker returns, and
left-over segments are drained first after a restart.

Layout: `<id>.seg` segment files (a magic line, then records framed as length + CRC32 so a
torn tail after a crash is detected and cut) and `<id>.ack` side files holding how many
leading records of the segment the broker has acknowledged. Acknowledgements may arrive out
of order across partitions, so each segment keeps a contiguous watermark plus the set of
acked indices beyond it; both are persisted (every second and on close), and a segment is
deleted once it is sealed and every record in it is acknowledged. Acknowledged records are
never sent again, which is what keeps a restart from duplicating what the broker already
has (only a crash between an acknowledgement and the next checkpoint can resend a record).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAGIC = b"KISSPL1\n"
_FRAME = struct.Struct("<II")  # payload length, crc32(payload)
_HEAD = struct.Struct("<qHiI")  # received_at (us), topic length, key length (-1 = None), value
FIRST_SEGMENT_ID = 10**12
"""New spools start high so that segments can be prepended (ids below) at shutdown."""


@dataclass(slots=True)
class SpoolMessage:
    topic: str
    key: bytes | None
    value: bytes
    received_at: int
    """Receive time of the frame it came from, UTC epoch microseconds."""


SpoolOffset = tuple[int, int]
"""(segment id, record index within the segment)."""


def encode_message(msg: SpoolMessage) -> bytes:
    topic = msg.topic.encode()
    key_len = -1 if msg.key is None else len(msg.key)
    payload = b"".join(
        (
            _HEAD.pack(msg.received_at, len(topic), key_len, len(msg.value)),
            topic,
            msg.key or b"",
            msg.value,
        )
    )
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpoolMessage:
    received_at, topic_len, key_len, value_len = _HEAD.unpack_from(payload)
    pos = _HEAD.size
    topic = payload[pos : pos + topic_len].decode()
    pos += topic_len
    key = None
    if key_len >= 0:
        key = payload[pos : pos + key_len]
        pos += key_len
    value = payload[pos : pos + value_len]
    return SpoolMessage(topic, key, value, received_at)


def _read_acks(path: Path) -> tuple[int, list[int]]:
    """A segment's persisted acknowledgements: contiguous watermark, indices beyond it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0, []
    if isinstance(doc, int):
        return doc, []
    if not isinstance(doc, dict):
        return 0, []
    beyond = doc.get("beyond") or []
    return int(doc.get("acked", 0)), [int(i) for i in beyond if isinstance(i, int)]


def _read_frame(handle: BinaryIO) -> bytes | None:
    """The next intact payload, or None at end of file or at a torn/corrupt record."""
    head = handle.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    length, crc = _FRAME.unpack(head)
    payload = handle.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    count: int = 0
    size: int = 0
    sealed: bool = False
    read_index: int = 0
    read_pos: int = len(MAGIC)
    acked: int = 0
    acked_beyond: set[int] = field(default_factory=set)
    persisted_acked: int = 0
    persisted_beyond: int = 0
    skip: set[int] = field(default_factory=set)
    """Indices ahead of the read cursor that are already acknowledged (after a restart)."""

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")

    @property
    def unacked(self) -> int:
        return self.count - self.acked - len(self.acked_beyond)


class Spool:
    """Append at the tail, read in order from the head, delete what the broker acknowledged.

    Thread-safe: the pipeline appends and reads; delivery callbacks acknowledge.
    """

    def __init__(self, directory: Path | str, *, segment_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._order: list[int] = []
        self._writer: BinaryIO | None = None
        self._active: _Segment | None = None
        self._reader: tuple[int, BinaryIO] | None = None
        self._peeked: tuple[SpoolOffset, SpoolMessage, int] | None = None
        self._depth = 0
        self._unread = 0
        self._dirty = False
        self._recover()

    # --- recovery ---
    def _recover(self) -> None:
        for path in sorted(self.directory.glob("*.seg")):
            try:
                seg_id = int(path.stem)
            except ValueError:
                continue
            segment = self._scan(seg_id, path)
            if segment.unacked <= 0:
                self._remove_files(segment)
                continue
            self._segments[seg_id] = segment
            self._order.append(seg_id)
            self._depth += segment.unacked
            self._unread += segment.count - segment.read_index - len(segment.skip)

    def _scan(self, seg_id: int, path: Path) -> _Segment:
        segment = _Segment(seg_id, path, sealed=True)
        acked, beyond = _read_acks(segment.ack_path)
        positions: list[int] = []
        with path.open("r+b") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                return segment  # not ours or torn before the magic: count 0, removed
            pos = len(MAGIC)
            while (payload := _read_frame(handle)) is not None:
                positions.append(pos)
                pos += _FRAME.size + len(payload)
            handle.truncate(pos)  # cut a torn tail so later appends never follow garbage
        segment.size = pos
        segment.count = len(positions)
        segment.acked = segment.persisted_acked = min(acked, segment.count)
        segment.acked_beyond = {i for i in beyond if segment.acked < i < segment.count}
        segment.persisted_beyond = len(segment.acked_beyond)
        segment.read_index = segment.acked
        segment.read_pos = positions[segment.acked] if segment.acked < segment.count else pos
        segment.skip = set(segment.acked_beyond)
        self._skip_acked(segment, positions)
        return segment

    @staticmethod
    def _skip_acked(segment: _Segment, positions: list[int]) -> None:
        """Move the read cursor past records acknowledged out of order before a restart."""
        while segment.read_index in segment.skip:
            segment.skip.discard(segment.read_index)
            segment.read_index += 1
            segment.read_pos = (
                positions[segment.read_index]
                if segment.read_index < segment.count
                else segment.size
            )

    # --- writing ---
    def append(self, msg: SpoolMessage) -> None:
        data = encode_message(msg)
        with self._lock:
            active = self._active
            if active is None or active.size >= self._segment_bytes:
                active = self._roll()
            assert self._writer is not None
            self._writer.write(data)
            active.count += 1
            active.size += len(data)
            self._depth += 1
            self._unread += 1
            self._dirty = True

    def _roll(self) -> _Segment:
        self._seal_active()
        seg_id = max(self._order, default=FIRST_SEGMENT_ID - 1) + 1
        segment = _Segment(seg_id, self.directory / f"{seg_id:020d}.seg", size=len(MAGIC))
        self._writer = segment.path.open("wb")
        self._writer.write(MAGIC)
        self._segments[seg_id] = segment
        self._order.append(seg_id)
        self._active = segment
        return segment

    def _seal_active(self) -> None:
        if self._active is None or self._writer is None:
            return
        self._writer.flush()
        self._writer.close()
        self._writer = None
        self._active.sealed = True
        if self._active.acked >= self._active.count:
            self._delete(self._active)
        self._active = None

    def prepend(self, messages: list[SpoolMessage]) -> None:
        """Put messages before everything spooled (records that were older, at shutdown)."""
        if not messages:
            return
        with self._lock:
            seg_id = min(self._order, default=FIRST_SEGMENT_ID) - 1
            segment = _Segment(seg_id, self.directory / f"{seg_id:020d}.seg", sealed=True)
            with segment.path.open("wb") as handle:
                handle.write(MAGIC)
                for msg in messages:
                    handle.write(encode_message(msg))
                handle.flush()
                os.fsync(handle.fileno())
                segment.size = handle.tell()
            segment.count = len(messages)
            self._segments[seg_id] = segment
            self._order.insert(0, seg_id)
            self._depth += segment.count
            self._unread += segment.count
            self._peeked = None

    def flush(self) -> None:
        """Hand buffered appends to the OS (bounds what a crash can lose to this interval)."""
        with self._lock:
            if self._writer is not None and self._dirty:
                self._writer.flush()
                self._dirty = False

    # --- reading ---
    def peek(self) -> tuple[SpoolOffset, SpoolMessage] | None:
        """The oldest record not yet handed out, without consuming it."""
        with self._lock:
            if self._peeked is None:
                self._peeked = self._read_next()
            if self._peeked is None:
                return None
            offset, msg, _ = self._peeked
            return offset, msg

    def advance(self) -> None:
        """Consume the record returned by the last peek (it was handed to the producer)."""
        with self._lock:
            if self._peeked is None:
                return
            (seg_id, _), _, next_pos = self._peeked
            segment = self._segments[seg_id]
            segment.read_index += 1
            segment.read_pos = next_pos
            self._unread -= 1
            self._peeked = None
            if segment.read_index in segment.skip:
                self._skip_on_disk(segment)

    def _skip_on_disk(self, segment: _Segment) -> None:
        handle = self._reader_for(segment)
        while segment.read_index in segment.skip:
            handle.seek(segment.read_pos)
            payload = _read_frame(handle)
            if payload is None:
                break
            segment.skip.discard(segment.read_index)
            segment.read_index += 1
            segment.read_pos += _FRAME.size + len(payload)

    def _read_next(self) -> tuple[SpoolOffset, SpoolMessage, int] | None:
        for seg_id in self._order:
            segment = self._segments[seg_id]
            if segment.read_index >= segment.count:
                continue
            if segment is self._active and self._writer is not None and self._dirty:
                self._writer.flush()
                self._dirty = False
            handle = self._reader_for(segment)
            handle.seek(segment.read_pos)
            payload = _read_frame(handle)
            if payload is None:  # cannot happen for a record we counted; skip it loudly
                raise OSError(f"spool segment {segment.path} is unreadable at {segment.read_pos}")
            next_pos = segment.read_pos + _FRAME.size + len(payload)
            return (seg_id, segment.read_index), decode_payload(payload), next_pos
        return None

    def _reader_for(self, segment: _Segment) -> BinaryIO:
        if self._reader is not None and self._reader[0] == segment.id:
            return self._reader[1]
        self._close_reader()
        handle = segment.path.open("rb")
        self._reader = (segment.id, handle)
        return handle

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def unread_messages(self) -> Iterator[tuple[SpoolOffset, SpoolMessage]]:
        """Every record not yet handed out, in order, without moving the read cursor.

        For start-up checks only (before anything is appended or read): it reads the segment
        files on handles of its own.
        """
        with self._lock:
            segments = [
                (s.path, s.id, s.read_index, s.read_pos, s.count, frozenset(s.skip))
                for s in (self._segments[i] for i in self._order)
            ]
        for path, seg_id, index, pos, count, skip in segments:
            with path.open("rb") as handle:
                handle.seek(pos)
                while index < count:
                    payload = _read_frame(handle)
                    if payload is None:
                        break
                    if index not in skip:
                        yield (seg_id, index), decode_payload(payload)
                    index += 1

    def discard(self, offsets: Iterable[SpoolOffset]) -> int:
        """Drop unread records the broker already holds: never hand them out, ack them.

        Returns how many were dropped (offsets already read, acked or unknown are ignored).
        """
        dropped: list[SpoolOffset] = []
        with self._lock:
            self._peeked = None
            touched: set[int] = set()
            for seg_id, index in offsets:
                segment = self._segments.get(seg_id)
                if (
                    segment is None
                    or not segment.read_index <= index < segment.count
                    or index in segment.skip
                    or index in segment.acked_beyond
                ):
                    continue
                segment.skip.add(index)
                self._unread -= 1
                touched.add(seg_id)
                dropped.append((seg_id, index))
            for seg_id in touched:
                segment = self._segments[seg_id]
                if segment.read_index in segment.skip:
                    self._skip_on_disk(segment)
        for offset in dropped:
            self.ack(offset)
        return len(dropped)

    # --- acknowledgement ---
    def ack(self, offset: SpoolOffset) -> None:
        """The broker has this record: never send it again, free its segment when all are."""
        seg_id, index = offset
        with self._lock:
            segment = self._segments.get(seg_id)
            if segment is None or index < segment.acked or index in segment.acked_beyond:
                return
            if index == segment.acked:
                segment.acked += 1
                while segment.acked in segment.acked_beyond:
                    segment.acked_beyond.discard(segment.acked)
                    segment.acked += 1
            else:
                segment.acked_beyond.add(index)
            self._depth -= 1
            if segment.sealed and segment.acked >= segment.count:
                self._delete(segment)

    def checkpoint(self) -> None:
        """Persist each segment's acknowledged watermark (atomic rename)."""
        with self._lock:
            pending = [
                (s, s.acked, sorted(s.acked_beyond))
                for s in self._segments.values()
                if s.acked != s.persisted_acked or len(s.acked_beyond) != s.persisted_beyond
            ]
        for segment, acked, beyond in pending:
            tmp = segment.ack_path.with_suffix(".ack.tmp")
            tmp.write_text(json.dumps({"acked": acked, "beyond": beyond}))
            with self._lock:
                if segment.id not in self._segments:
                    tmp.unlink(missing_ok=True)
                    continue
                tmp.replace(segment.ack_path)
                segment.persisted_acked = acked
                segment.persisted_beyond = len(beyond)

    def _delete(self, segment: _Segment) -> None:
        if self._reader is not None and self._reader[0] == segment.id:
            self._close_reader()
        self._segments.pop(segment.id, None)
        with contextlib.suppress(ValueError):
            self._order.remove(segment.id)
        if self._peeked is not None and self._peeked[0][0] == segment.id:
            self._peeked = None
        self._remove_files(segment)

    @staticmethod
    def _remove_files(segment: _Segment) -> None:
        segment.path.unlink(missing_ok=True)
        segment.ack_path.unlink(missing_ok=True)

    # --- state ---
    @property
    def depth(self) -> int:
        """Records in the spool the broker has not acknowledged."""
        return self._depth

    @property
    def unread(self) -> int:
        """Records not yet handed back to the producer."""
        return self._unread

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments.values())

    def close(self) -> None:
        """Seal the active segment and persist watermarks; the directory survives a restart."""
        with self._lock:
            self._seal_active()
            self._close_reader()
        self.checkpoint()
