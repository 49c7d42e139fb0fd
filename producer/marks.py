"""Receive marks: up to which receive time everything this producer received is on the broker.

A consumer that joins two raw topics on receive time (the spread) must know, for a record
received at t, whether records of the other topic received before t can still arrive. The
end offsets cannot say: the topics are written by different produce requests, so a record
received earlier can be appended later. The producer can: it stamps every frame and sees
every acknowledgement.

`ReceiveMarks` counts, per receive stamp, the holds still open on it: one for the frame
while a session and the pipeline have it in hand, one per message produced from it until
the broker acknowledges it (or refuses it for good). Stamps are taken under its lock, so
they are issued in order, and the oldest open stamp bounds the watermark: every record
received at or before `watermark` is acknowledged. Per topic partition it keeps one past
the highest acknowledged offset. Both change under the same lock, so a mark is consistent.
Cost on the hot path: a lock and a dict update per frame stamped and per batch of messages
queued; an acknowledgement is a dict update and a list append in the delivery thread, folded
under the lock when a mark is taken (in that same thread).

`MarkPublisher` sends a mark (schemas/receive_mark.avsc, keyed by the producer instance)
to the marks topic at most every `interval_s` when something changed, and every
`heartbeat_s` anyway (consumers treat a producer whose marks stop as gone). Nothing secret
goes into a mark: the instance id, times and offsets.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fastavro
from confluent_kafka import KafkaException

from schemas import ROOT

log = logging.getLogger(__name__)

MARK_SCHEMA_PATH = ROOT / "receive_mark.avsc"


def _now_us() -> int:
    return time.time_ns() // 1000


def instance_id() -> str:
    """A producer instance's id in its marks: host, process id, a random part (per start)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Mark:
    watermark: int
    """Every record received (UTC epoch µs) at or before this is acknowledged."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> one past the highest acknowledged offset."""


class ReceiveMarks:
    """Open receive stamps and acknowledged offsets (thread-safe; see the module docstring).

    `track(topic)` says which topics' offsets go into marks (the raw topics, not the frames,
    status or dead-letter topics).
    """

    def __init__(
        self,
        track: Callable[[str], bool] = lambda topic: True,
        clock: Callable[[], int] = _now_us,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._track = track
        self._tracked: dict[str, bool] = {}
        self._open: dict[int, int] = {}
        """receive stamp -> holds still open on it."""
        self._order: deque[int] = deque()
        """The open stamps in the order issued (entries whose holds are gone are skipped)."""
        self._last = -1
        self._in_order = True
        """False after the clock went back: then the watermark is the minimum of all open."""
        self._next: dict[tuple[str, int], int] = {}
        self._released: list[int] = []
        """Stamps of acknowledged messages not yet folded into `_open` (see `acked`)."""
        self.dirty = True
        """Something settled or was acknowledged since the last `snapshot`."""

    # --- the hot path ---
    def stamp(self) -> int:
        """A receive time (UTC epoch µs) for a frame just read, held until `settle`."""
        with self._lock:
            now = self._clock()
            if now < self._last:
                self._in_order = False
            self._last = now
            held = self._open.get(now)
            if held is None:
                self._open[now] = 1
                self._order.append(now)
            else:
                self._open[now] = held + 1
            return now

    def hold(self, received_at: int, messages: int = 1) -> bool:
        """More holds on a stamp still open (messages produced from its frame); False if the
        stamp is not open (a status event, a record spooled by an earlier run)."""
        with self._lock:
            held = self._open.get(received_at)
            if held is None:
                return False
            self._open[received_at] = held + messages
            return True

    def settle(self, received_at: int) -> None:
        """One hold on a stamp released (frame handled, message refused for good, or a frame
        the session did not pass on)."""
        with self._lock:
            self._settle(received_at)

    def acked(
        self, received_at: int, tracked: bool, topic: str, partition: int, offset: int
    ) -> None:
        """A message acknowledged at `offset`; `tracked`: it holds its stamp (see `hold`).

        Call from one thread only, the one that also takes the snapshots (the delivery
        callbacks'): the offsets and the releases are then the thread's own, without the
        lock per message; releases are folded into the open stamps by `snapshot`.
        """
        wanted = self._tracked.get(topic)
        if wanted is None:
            wanted = self._tracked[topic] = self._track(topic)
        if wanted and offset >= 0:
            key = (topic, partition)
            if offset >= self._next.get(key, 0):
                self._next[key] = offset + 1
        if tracked:
            self._released.append(received_at)
        self.dirty = True

    def fold(self) -> None:
        """Apply the releases of acknowledged messages (from the acknowledging thread)."""
        released, self._released = self._released, []
        if released:
            with self._lock:
                for received_at in released:
                    self._settle(received_at)

    def _settle(self, received_at: int) -> None:
        held = self._open.get(received_at)
        if held is None:
            return
        if held > 1:
            self._open[received_at] = held - 1
            return
        del self._open[received_at]
        self.dirty = True
        order = self._order
        while order and order[0] not in self._open:
            order.popleft()

    # --- marks ---
    @property
    def open_stamps(self) -> int:
        self.fold()
        return len(self._open)

    def snapshot(self) -> Mark:
        """The current mark (consistent: releases folded, then taken under the lock); from the
        thread that calls `acked`."""
        self.fold()
        with self._lock:
            self.dirty = False
            if not self._open:
                self._in_order = True
                # Anything stamped from now on gets a stamp >= now.
                return Mark(self._clock() - 1, dict(self._next))
            if self._in_order:
                return Mark(self._order[0] - 1, dict(self._next))
            return Mark(min(self._open) - 1, dict(self._next))


@cache
def mark_schema_text() -> str:
    return MARK_SCHEMA_PATH.read_text()


@cache
def _parsed() -> Any:
    return fastavro.parse_schema(json.loads(mark_schema_text()))


@cache
def _parsed_plain() -> Any:
    """The schema without logical types: times decode as the integers they are."""
    return fastavro.parse_schema(json.loads(mark_schema_text().replace("timestamp-micros", "-")))


def encode_mark(producer: str, published_at: int, mark: Mark) -> bytes:
    """Avro body (without the Confluent header) of a mark."""
    out = io.BytesIO()
    datum = {
        "producer": producer,
        "published_at": published_at,
        "watermark": mark.watermark,
        "offsets": [
            {"topic": topic, "partition": partition, "next_offset": next_offset}
            for (topic, partition), next_offset in sorted(mark.offsets.items())
        ],
    }
    fastavro.schemaless_writer(out, _parsed(), datum)
    return out.getvalue()


def decode_mark(value: bytes) -> tuple[str, int, Mark]:
    """(producer, published_at, mark) of a Confluent-framed mark; ValueError if malformed."""
    if len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent wire format")
    try:
        datum: Any = fastavro.schemaless_reader(io.BytesIO(value[5:]), _parsed_plain(), None)
    except Exception as exc:
        raise ValueError(f"undecodable mark: {type(exc).__name__}") from None
    offsets = {(o["topic"], int(o["partition"])): int(o["next_offset"]) for o in datum["offsets"]}
    mark = Mark(int(datum["watermark"]), offsets)
    return str(datum["producer"]), int(datum["published_at"]), mark


class MarkPublisher:
    """Publishes the marks of one producer instance; call `maybe_publish` often from the
    thread that serves the delivery callbacks (or any thread: the snapshot is locked)."""

    def __init__(
        self,
        marks: ReceiveMarks,
        send: Callable[[bytes, bytes], None],
        *,
        header: bytes,
        producer: str | None = None,
        interval_s: float = 0.02,
        heartbeat_s: float = 1.0,
        paused: Callable[[], bool] = lambda: False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``send(key, value)`` produces to the marks topic (BufferError or KafkaException:
        skipped this time).
        ``paused()``: do not publish (the sink is spooling: records on disk are not counted
        in the offsets, and a spool left by an earlier run holds older stamps)."""
        self.marks = marks
        self.producer = producer or instance_id()
        self._key = self.producer.encode()
        self._send = send
        self._header = header
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self._paused = paused
        self._next_warning = 0.0
        self._monotonic = monotonic
        self._last = -1e18
        self.published = 0

    def due_in(self) -> float:
        """Seconds until a mark could next be due (a poll timeout for the caller)."""
        wait = self._last + (self.interval_s if self.marks.dirty else self.heartbeat_s)
        return max(0.0, wait - self._monotonic())

    def publish_final(self) -> bool:
        """One last mark, at once, when the producer stops cleanly with everything
        acknowledged: consumers holding triggers for this producer's next mark release them
        now rather than when it stops counting (processors/spread_marks.py). Not while
        spooling (`paused`)."""
        self._last = -1e18
        self.marks.dirty = True
        return self.maybe_publish()

    def maybe_publish(self) -> bool:
        now = self._monotonic()
        since = now - self._last
        if since < self.interval_s or (not self.marks.dirty and since < self.heartbeat_s):
            return False
        if self._paused():
            self.marks.fold()  # (nothing is published, but the releases must not pile up)
            return False
        mark = self.marks.snapshot()
        value = self._header + encode_mark(self.producer, _now_us(), mark)
        self._last = now
        try:
            self._send(self._key, value)
        except (BufferError, KafkaException) as exc:  # memory full; marks topic unknown for now
            self.marks.dirty = True  # try again at the next interval
            if isinstance(exc, KafkaException) and now >= self._next_warning:
                self._next_warning = now + 10.0
                log.warning("receive marks not published for now", extra={"error": str(exc)})
            return False
        self.published += 1
        return True
