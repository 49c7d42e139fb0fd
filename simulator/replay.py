"""Replay of a recorded session: raw frames served again at their original pace (or faster).

Input is the producer's record format: gzip-compressed (or plain) JSONL, one object per frame,
`{"received_at": <epoch microseconds>, "frame": "<raw text>"}`. Data frames go to whoever is
subscribed to their tr_id and to the first field of their first record (the symbol), from
the moment the first subscription arrives; JSON
system messages and encrypted frames (their key died with the recorded session) are skipped.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    tr_id: str
    key: str
    raw: str
    received_at: int


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_frames(path: str | Path) -> Iterator[tuple[int, str]]:
    """(received_at, raw frame) for every well-formed line; bad lines are skipped."""
    with _open(Path(path)) as fh:
        for line in fh:
            try:
                obj: Any = orjson.loads(line)
                received_at, frame = int(obj["received_at"]), obj["frame"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if isinstance(frame, str):
                yield received_at, frame


def routing(raw: str) -> tuple[str, str] | None:
    """(tr_id, key) of a plain data frame, None for anything that cannot be routed."""
    if not raw or raw[0] != "0":
        return None
    parts = raw.split("|", 3)
    if len(parts) != 4:
        return None
    return parts[1], parts[3].split("^", 1)[0]


class ReplaySource:
    """Hands out the frames that are due, by wall-clock offset from the first `due` call."""

    def __init__(self, path: str | Path, *, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("replay speed must be positive")
        self.path = Path(path)
        self.speed = speed
        self._frames = read_frames(self.path)
        self._pending: tuple[int, str] | None = None
        self._origin_wall: float | None = None
        self._origin_rec = 0
        self.sent = 0
        self.skipped = 0
        self.done = False

    def due(self, now: float | None = None) -> list[ReplayFrame]:
        now = time.monotonic() if now is None else now
        out: list[ReplayFrame] = []
        while not self.done:
            if self._pending is None:
                nxt = next(self._frames, None)
                if nxt is None:
                    self.done = True
                    break
                self._pending = nxt
            received_at, raw = self._pending
            if self._origin_wall is None:
                self._origin_wall, self._origin_rec = now, received_at
            offset = (received_at - self._origin_rec) / 1e6 / self.speed
            if self._origin_wall + offset > now:
                break
            self._pending = None
            route = routing(raw)
            if route is None:
                self.skipped += 1
                continue
            self.sent += 1
            out.append(ReplayFrame(route[0], route[1], raw, received_at))
        return out

    @property
    def started(self) -> bool:
        return self._origin_wall is not None

    def progress(self) -> dict[str, Any]:
        return {"file": str(self.path), "frames": self.sent, "skipped": self.skipped,
                "done": self.done}  # fmt: skip
