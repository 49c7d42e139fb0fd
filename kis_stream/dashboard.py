"""The demo's live terminal view of the derived streams.

It is an ordinary downstream consumer: it reads the four derived topics through the schema
registry (Confluent wire format) exactly as a user's code would, keeps the latest value per
symbol in memory, and renders them with rich. Rates and consumer lag come from the records
it counted and the partitions' high watermarks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from kis_stream import topics

Row = Mapping[str, Any]
KST = timezone(timedelta(hours=9), "KST")


@dataclass
class StreamState:
    """Latest record per key of one derived topic, and how fast records arrive."""

    topic: str
    latest: dict[str, Row] = field(default_factory=dict)
    total: int = 0
    lag: int | None = None
    _arrivals: deque[float] = field(default_factory=deque)

    def add(self, key: str, value: Row, now: float) -> None:
        self.latest[key] = value
        self.total += 1
        self._arrivals.append(now)

    def rate(self, now: float, window: float = 5.0) -> float:
        """Records per second over the last `window` seconds."""
        while self._arrivals and self._arrivals[0] < now - window:
            self._arrivals.popleft()
        return len(self._arrivals) / window


MARKET_KEY = "*"
"""Key prefix of a program venue total (sorts before every symbol, so totals show first)."""


def _key_of(topic: str, value: Row) -> str:
    venue = value.get("venue")
    if topic == topics.PROGRAM_NETBUY and value.get("scope") == "market":
        # Venue totals are their own records (key `*|venue`); `symbol` there only names the
        # update that moved the total, so keying them by symbol would overwrite a symbol row.
        return f"{MARKET_KEY} {venue}"
    symbol = str(value.get("symbol", "?"))
    if topic == topics.SPREAD_KRX_NXT or venue is None:
        return symbol
    return f"{symbol} {venue}"


def _is_total(row: Row) -> bool:
    return row.get("scope") == "market"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _clock(instant: Any) -> str:
    """Korea time (what a KRX user reads on every screen) of epoch ms or an aware datetime."""
    if isinstance(instant, datetime):
        return instant.astimezone(KST).strftime("%H:%M:%S")
    if isinstance(instant, int):
        return datetime.fromtimestamp(instant / 1000, KST).strftime("%H:%M:%S")
    return _fmt(instant)


Column = tuple[str, Callable[[Row], str]]

COLUMNS: dict[str, list[Column]] = {
    topics.BARS_1S: [
        ("second (KST)", lambda r: _clock(r.get("window_start"))),
        ("open", lambda r: _fmt(r.get("open"))),
        ("high", lambda r: _fmt(r.get("high"))),
        ("low", lambda r: _fmt(r.get("low"))),
        ("close", lambda r: _fmt(r.get("close"))),
        ("volume", lambda r: _fmt(r.get("volume"))),
        ("vwap", lambda r: _fmt(r.get("vwap"))),
        ("trades", lambda r: _fmt(r.get("trade_count"))),
        ("rev", lambda r: _fmt(r.get("revision"))),
    ],
    topics.BOOK_IMBALANCE: [
        ("L1", lambda r: _fmt(r.get("imbalance_l1"), 3)),
        ("depth5", lambda r: _fmt(r.get("imbalance_depth5"), 3)),
        ("depth10", lambda r: _fmt(r.get("imbalance_depth10"), 3)),
        ("mid", lambda r: _fmt(r.get("mid"), 1)),
        ("micro", lambda r: _fmt(r.get("microprice"), 1)),
        ("ticks", lambda r: _fmt(r.get("spread_ticks"), 1)),
        ("bps", lambda r: _fmt(r.get("spread_bps"), 2)),
    ],
    topics.SPREAD_KRX_NXT: [
        ("KRX mid", lambda r: _fmt(r.get("krx_mid"), 1)),
        ("NXT mid", lambda r: _fmt(r.get("nxt_mid"), 1)),
        ("KRW", lambda r: _fmt(r.get("spread_krw"), 1)),
        ("bps", lambda r: _fmt(r.get("spread_bps"), 2)),
        ("age ms", lambda r: _fmt(r.get("age_ms"))),
        ("crossed", lambda r: "YES" if r.get("crossed") else ""),
    ],
    topics.PROGRAM_NETBUY: [
        # A venue total row (`* KRX`) shows the sums of the symbols' latest cumulative values.
        ("net qty", lambda r: _fmt(r.get("market_net_qty" if _is_total(r) else "net_qty"))),
        ("Δ qty", lambda r: "" if _is_total(r) else _fmt(r.get("net_qty_change"))),
        (
            "net amount",
            lambda r: _fmt(r.get("market_net_amount" if _is_total(r) else "net_amount")),
        ),
        ("Δ amount", lambda r: "" if _is_total(r) else _fmt(r.get("net_amount_change"))),
        ("symbols", lambda r: _fmt(r.get("market_symbols")) if _is_total(r) else ""),
    ],
}

TITLES = {
    topics.BARS_1S: "1-second bars",
    topics.BOOK_IMBALANCE: "order-book imbalance",
    topics.SPREAD_KRX_NXT: "KRX vs NXT mid spread",
    topics.PROGRAM_NETBUY: "program net-buy (cumulative)",
}


class Dashboard:
    """Holds what the view shows; `render()` turns it into one rich renderable."""

    def __init__(self, streams: Iterable[str] = topics.DERIVED, max_rows: int = 8) -> None:
        self.streams = {name: StreamState(name) for name in streams}
        self.max_rows = max_rows
        self.status = ""

    def add(self, topic: str, value: Row, now: float | None = None) -> None:
        state = self.streams.get(topic)
        if state is not None:
            state.add(_key_of(topic, value), value, time.monotonic() if now is None else now)

    def set_lag(self, topic: str, lag: int | None) -> None:
        if topic in self.streams:
            self.streams[topic].lag = lag

    def render(self, now: float | None = None) -> Group:
        now = time.monotonic() if now is None else now
        parts: list[Any] = []
        if self.status:
            parts.append(Text(self.status, style="bold"))
        for name, state in self.streams.items():
            lag = "?" if state.lag is None else f"{state.lag:,}"
            table = Table(
                title=f"{TITLES.get(name, name)}  [{name}]",
                caption=f"{state.rate(now):,.1f} rec/s · {state.total:,} total · lag {lag}",
                expand=True,
            )
            table.add_column("key", no_wrap=True)
            columns = COLUMNS.get(name, [])
            for title, _ in columns:
                table.add_column(title, justify="right")
            for key in sorted(state.latest)[: self.max_rows]:
                row = state.latest[key]
                table.add_row(key, *(cell(row) for _, cell in columns))
            parts.append(table)
        return Group(*parts)
