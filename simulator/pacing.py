"""Load-mode pacing against an absolute schedule, so the delivered rate is the target rate.

Relative pacing (credit per tick, capped) loses whatever a slow tick overran, and the losses
add up: a 20,000 records/s target delivered 19,200. Here the records owed are always
`rate x elapsed - delivered`: a late chunk is caught up by the next one. A server that
cannot keep up at all does not pile up an ever-growing debt: what is more than
`max_backlog` seconds behind is written off, counted, and reported.
"""

from __future__ import annotations

from typing import Any


class LoadPacer:
    def __init__(self, rate: float, now: float, *, max_backlog: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.max_backlog = max_backlog
        self.delivered = 0
        """Records delivered against the schedule since the start."""
        self.written_off = 0
        """Records the schedule gave up on because the server was too far behind."""
        self.active_seconds = 0.0
        self._origin = now
        self._base = 0
        self._running = True

    def owed(self, now: float) -> int:
        """Records due by `now` and not delivered yet (never more than max_backlog's worth)."""
        if not self._running:
            self.restart(now)
        due = self._base + round((now - self._origin) * self.rate)
        owed = due - self.delivered - self.written_off
        cap = max(1, int(self.rate * self.max_backlog))
        if owed > cap:
            self.written_off += owed - cap
            owed = cap
        return max(0, owed)

    def add(self, records: int) -> None:
        self.delivered += records

    def pause(self, now: float) -> None:
        """Nobody to deliver to: stop accruing (a later client gets no burst of old debt)."""
        if self._running:
            self.active_seconds += now - self._origin
            self._running = False

    def restart(self, now: float) -> None:
        self._origin = now
        self._base = self.delivered + self.written_off
        self._running = True

    def snapshot(self, now: float) -> dict[str, Any]:
        active = self.active_seconds + (now - self._origin if self._running else 0.0)
        return {
            "target_per_s": self.rate,
            "delivered": self.delivered,
            "written_off": self.written_off,
            "active_seconds": round(active, 3),
            "delivered_per_s": round(self.delivered / active) if active > 0 else None,
        }
