"""`--record FILE`: every raw frame with its receive time, as gzip JSONL, for replay.

One line per WebSocket message: `{"received_at": <UTC epoch us>, "frame": "<raw text>"}`.
The simulator's replay mode reads exactly this. A frame whose bytes are not valid UTF-8 is
written with U+FFFD replacements (JSON holds text); the untouched bytes are in kis.frames.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson


class FrameRecorder:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Append mode: a restarted producer adds a new gzip member; readers see one stream.
        self._raw = gzip.open(path, "ab", compresslevel=5)  # noqa: SIM115 (closed in close())
        self._out = io.BufferedWriter(self._raw, buffer_size=1 << 20)
        self.count = 0

    def write(self, received_at: int, frame: bytes) -> None:
        text = frame.decode("utf-8", "replace")
        self._out.write(orjson.dumps({"received_at": received_at, "frame": text}) + b"\n")
        self.count += 1

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.flush()
        self._out.close()


def read_recording(path: Path) -> list[tuple[int, str]]:
    """(received_at, frame) pairs of a recording, in order (used by tests and tools)."""
    out: list[tuple[int, str]] = []
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                doc = orjson.loads(line)
                out.append((int(doc["received_at"]), str(doc["frame"])))
    return out
