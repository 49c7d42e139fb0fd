"""Ground truth: every record the simulator sent (or generated with nobody subscribed), as JSONL.

One line per record and delivery, with a `seq` unique and increasing in file order, so a test
can compare exactly what reached Kafka with what left the simulator. Lines are buffered and
flushed at least every `flush_seconds`, and on close.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

import orjson


class TruthLog:
    def __init__(self, path: str | Path, *, flush_seconds: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("wb")
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self.seq = 0

    def write(self, entry: dict[str, Any]) -> int:
        """Append one entry, stamping it with the next `seq`; returns that seq."""
        self.seq += 1
        entry["seq"] = self.seq
        self._file.write(orjson.dumps(entry) + b"\n")
        now = time.monotonic()
        if now - self._last_flush >= self._flush_seconds:
            self._file.flush()
            self._last_flush = now
        return self.seq

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def read_truth(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a truth log (for tests and tools)."""
    with Path(path).open("rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]
