"""The demo's live view: latest value per key, rates over a window, rendering."""

from __future__ import annotations

from rich.console import Console

from kis_stream import topics
from kis_stream.dashboard import Dashboard


def _bar(symbol: str, venue: str, close: int, start: int) -> dict[str, object]:
    return {
        "symbol": symbol,
        "venue": venue,
        "window_start": start,
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "volume": 10,
        "vwap": float(close),
        "trade_count": 1,
        "revision": 0,
    }


def test_keeps_latest_per_symbol_and_venue() -> None:
    board = Dashboard()
    board.add(topics.BARS_1S, _bar("005930", "KRX", 70000, 0), now=0.0)
    board.add(topics.BARS_1S, _bar("005930", "KRX", 70100, 1000), now=0.5)
    board.add(topics.BARS_1S, _bar("005930", "NXT", 70050, 1000), now=0.6)
    state = board.streams[topics.BARS_1S]
    assert state.total == 3
    assert state.latest["005930 KRX"]["close"] == 70100
    assert state.latest["005930 NXT"]["close"] == 70050


def test_rate_counts_only_the_window() -> None:
    board = Dashboard()
    for i in range(10):
        board.add(topics.BOOK_IMBALANCE, {"symbol": "000660", "venue": "KRX"}, now=float(i))
    # at t=10 with a 5 s window, arrivals at 5..9 count
    assert board.streams[topics.BOOK_IMBALANCE].rate(now=10.0) == 1.0


def test_render_shows_values_and_unknown_topics_are_ignored() -> None:
    board = Dashboard()
    board.add("some.other.topic", {"symbol": "x"})
    board.add(topics.SPREAD_KRX_NXT, {"symbol": "005930", "krx_mid": 70050.0, "crossed": True})
    board.set_lag(topics.SPREAD_KRX_NXT, 3)
    console = Console(width=200, record=True)
    console.print(board.render())
    text = console.export_text()
    assert "70,050.0" in text
    assert "YES" in text
    assert "lag 3" in text
    assert "some.other.topic" not in text


def test_bar_second_is_shown_in_korea_time_for_ints_and_datetimes() -> None:
    from datetime import UTC, datetime

    board = Dashboard()
    # 00:00:01 UTC is 09:00:01 KST
    board.add(topics.BARS_1S, _bar("005930", "KRX", 70000, 1000))
    board.add(
        topics.BARS_1S,
        _bar("000660", "KRX", 1, 0) | {"window_start": datetime(2026, 1, 2, 0, 0, 2, tzinfo=UTC)},
    )
    console = Console(width=200, record=True)
    console.print(board.render())
    text = console.export_text()
    assert "09:00:01" in text
    assert "09:00:02" in text


def _program(scope: str, symbol: str | None, venue: str, **values: int) -> dict[str, object]:
    record: dict[str, object] = {"scope": scope, "symbol": symbol, "venue": venue}
    for name in ("net_qty", "net_amount", "net_qty_change", "net_amount_change"):
        record[name] = None
    for name in ("market_net_qty", "market_net_amount", "market_symbols"):
        record[name] = None
    record.update(values)
    return record


def test_program_venue_totals_come_from_the_market_records() -> None:
    board = Dashboard(streams=[topics.PROGRAM_NETBUY])
    board.add(topics.PROGRAM_NETBUY, _program("symbol", "005930", "KRX", net_amount=1_111))
    # A venue total names the symbol whose update moved it: it must not replace that row.
    total = {"market_net_qty": 77, "market_net_amount": 9_876_543, "market_symbols": 2}
    board.add(topics.PROGRAM_NETBUY, _program("market", "005930", "KRX", **total))
    board.add(topics.PROGRAM_NETBUY, _program("market", None, "NXT", market_net_amount=-5))
    state = board.streams[topics.PROGRAM_NETBUY]
    assert state.latest["005930 KRX"]["net_amount"] == 1_111
    assert state.latest["* KRX"]["market_net_amount"] == 9_876_543
    console = Console(width=200, record=True)
    console.print(board.render())
    lines = console.export_text().splitlines()
    krx_total = next(line for line in lines if "* KRX" in line)
    assert "9,876,543" in krx_total and "77" in krx_total
    assert "-5" in next(line for line in lines if "* NXT" in line)
    assert "1,111" in next(line for line in lines if "005930 KRX" in line)


def test_program_venue_totals_are_listed_before_the_symbols() -> None:
    board = Dashboard(streams=[topics.PROGRAM_NETBUY], max_rows=1)
    board.add(topics.PROGRAM_NETBUY, _program("symbol", "000660", "KRX", net_amount=1))
    board.add(topics.PROGRAM_NETBUY, _program("market", None, "KRX", market_net_amount=42))
    console = Console(width=200, record=True)
    console.print(board.render())
    text = console.export_text()
    assert "* KRX" in text and "000660" not in text
