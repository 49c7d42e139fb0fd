"""The market clock: Korea time of day that runs in real time, accelerated, or from a chosen start.

The demo must show a live market whatever the wall clock says, so by default the clock starts
at 09:00:00 KST on today's (Korea) date and advances with the wall clock times `speed`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

KST = dt.timezone(dt.timedelta(hours=9), "KST")
DAY_SECONDS = 86_400


def parse_time_of_day(text: str) -> float:
    """'08:29:50', '0829', '082950' or 'now' -> seconds since midnight Korea time."""
    text = text.strip().lower()
    if text == "now":
        now = dt.datetime.now(KST)
        return now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
    digits = text.replace(":", "")
    if not digits.isdigit() or len(digits) not in (4, 6):
        raise ValueError(f"time of day must be HH:MM[:SS] or 'now', got {text!r}")
    hh, mm = int(digits[0:2]), int(digits[2:4])
    ss = int(digits[4:6]) if len(digits) == 6 else 0
    if hh > 23 or mm > 59 or ss > 59:
        raise ValueError(f"not a time of day: {text!r}")
    return float(hh * 3600 + mm * 60 + ss)


_HHMMSS: dict[int, str] = {}


def hhmmss(seconds: float) -> str:
    """Seconds since midnight -> 'HHMMSS' (memoised: every record formats a few times)."""
    s = int(seconds) % DAY_SECONDS
    text = _HHMMSS.get(s)
    if text is None:
        text = _HHMMSS[s] = f"{s // 3600:02d}{s % 3600 // 60:02d}{s % 60:02d}"
    return text


def today_kst() -> dt.date:
    return dt.datetime.now(KST).date()


class MarketClock:
    """Seconds since midnight (KST) of the simulated business day; monotonic, never wraps."""

    def __init__(
        self,
        start: float = 9 * 3600.0,
        *,
        date: dt.date | None = None,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start = start
        self.date = date or today_kst()
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> float:
        return self.start + (self._monotonic() - self._origin) * self.speed

    def yyyymmdd(self) -> str:
        return self.date.strftime("%Y%m%d")

    def stamp(self) -> str:
        """YYYYMMDDHHMMSS of the market time now (PINGPONG's datetime)."""
        return self.yyyymmdd() + hhmmss(self.now())

    def epoch_seconds(self, seconds: float) -> float:
        """UTC epoch seconds of a market time on the business date."""
        midnight = dt.datetime.combine(self.date, dt.time(0), tzinfo=KST)
        return midnight.timestamp() + seconds
