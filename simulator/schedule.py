"""The trading day: KRX and NXT phases by market time, and their status codes."""

from __future__ import annotations

H = 3600.0

KRX_SCHEDULE = (
    (0.0, "closed"),
    (8.5 * H, "auction_open"),
    (9 * H, "continuous"),
    (15 * H + 1200, "auction_close"),
    (15.5 * H, "closed"),
)
NXT_SCHEDULE = (
    (0.0, "closed"),
    (8 * H, "pre"),
    (8 * H + 3000, "closed"),
    (9 * H + 30, "main"),
    (15 * H + 1200, "closed"),
    (15.5 * H, "after"),
    (20 * H, "closed"),
)
BOUNDARIES = tuple(sorted({t for t, _ in KRX_SCHEDULE + NXT_SCHEDULE if t > 0}))
NXT_TRADING = frozenset({"pre", "main", "after"})
# Approximate 장운영구분코드 per phase: (MKOP_CLS_CODE, ANTC_MKOP_CLS_CODE).
KRX_STATUS = {
    "closed": ("130", "311"),
    "auction_open": ("110", "112"),
    "continuous": ("112", "112"),
    "auction_close": ("120", "311"),
}
NXT_STATUS = {"closed": ("N30", "311"), "pre": ("N10", "112"), "main": ("N12", "112")}
NXT_STATUS["after"] = ("N20", "311")
NXT_MARKET_CLS = {"pre": "1", "main": "2", "after": "3"}


def phase_at(schedule: tuple[tuple[float, str], ...], t: float) -> str:
    current = schedule[0][1]
    for start, name in schedule:
        if t >= start:
            current = name
    return current
