"""1-second bars: the ledger's edge cases, then the Faust agent through its test context."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from processors.bars import BarLedger, recent_published
from processors.inputs import BUY, NEUTRAL, SELL, Trade, kst_instant_ms, trade_from

DAY = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
T0 = kst_instant_ms(DAY, 9 * 3_600_000)  # 09:00:00 KST


def tick(second: int, price: int, volume: int, side: int = BUY, symbol: str = "005930") -> Trade:
    return Trade(symbol, "KRX", T0 + second * 1000, price, volume, side)


class Feed:
    """Drives a ledger with increasing offsets, collecting what it publishes."""

    def __init__(self, horizon_ms: int = 10_000) -> None:
        self.store: dict[str, Any] = {}
        self.ledger = BarLedger(self.store, horizon_ms)
        self.offset = 0
        self.published: list[dict[str, Any]] = []
        self.late: list[dict[str, Any]] = []

    def tick(self, t: Trade, wall: float = 0.0, offset: int | None = None) -> None:
        if offset is None:
            offset = self.offset
            self.offset += 1
        outcome = self.ledger.on_tick(t, offset=offset, partition=0, wall=wall)
        self.published += outcome.bars
        if outcome.late:
            self.late.append(outcome.late)

    def quiet(self, wall: float, grace: float = 1.0) -> None:
        for key in [k for k in self.store if k.count("|") == 1]:
            record = self.ledger.on_quiet(key, wall=wall, grace=grace)
            if record:
                self.published.append(record)


def test_first_tick_opens_a_bar_and_publishes_nothing() -> None:
    feed = Feed()
    feed.tick(tick(0, 70_000, 10))
    assert feed.published == []
    assert feed.store["005930|KRX"]["bar"][0] == T0


def test_bar_is_published_when_a_later_second_starts() -> None:
    feed = Feed()
    feed.tick(tick(0, 70_000, 10, BUY))
    feed.tick(tick(0, 70_100, 5, SELL))
    feed.tick(tick(0, 69_900, 2, NEUTRAL))
    feed.tick(tick(0, 70_000, 3, BUY))
    feed.tick(tick(3, 70_200, 1))
    assert feed.published == [
        {
            "symbol": "005930",
            "venue": "KRX",
            "window_start": T0,
            "window_end": T0 + 1000,
            "open": 70_000,
            "high": 70_100,
            "low": 69_900,
            "close": 70_000,
            "volume": 20,
            "turnover": 70_000 * 10 + 70_100 * 5 + 69_900 * 2 + 70_000 * 3,
            "vwap": (70_000 * 10 + 70_100 * 5 + 69_900 * 2 + 70_000 * 3) / 20,
            "trade_count": 4,
            "buy_volume": 13,
            "sell_volume": 5,
            "revision": 0,
        }
    ]


def test_seconds_without_trades_publish_nothing() -> None:
    feed = Feed()
    for second in (0, 5, 6):
        feed.tick(tick(second, 70_000, 1))
    assert [b["window_start"] for b in feed.published] == [T0, T0 + 5000]


def test_window_boundary_is_the_exchange_second_not_arrival() -> None:
    feed = Feed()
    feed.tick(tick(0, 100, 1), wall=0.0)
    feed.tick(tick(0, 101, 1), wall=5.0)  # arrives much later, same exchange second
    feed.tick(tick(1, 102, 1), wall=5.1)
    assert [(b["open"], b["close"], b["trade_count"]) for b in feed.published] == [(100, 101, 2)]


def test_late_tick_revises_the_published_bar() -> None:
    feed = Feed()
    feed.tick(tick(0, 100, 1))
    feed.tick(tick(1, 110, 1))  # publishes second 0
    feed.tick(tick(0, 90, 4, SELL))  # late for second 0
    assert [(b["window_start"], b["revision"]) for b in feed.published] == [(T0, 0), (T0, 1)]
    revised = feed.published[1]
    assert (revised["low"], revised["close"], revised["volume"], revised["sell_volume"]) == (
        90,
        90,
        5,
        4,
    )
    feed.tick(tick(0, 95, 1))
    assert feed.published[-1]["revision"] == 2 and feed.published[-1]["volume"] == 6
    # The open bar of second 1 is untouched.
    feed.tick(tick(2, 1, 1))
    assert feed.published[-1]["window_start"] == T0 + 1000
    assert feed.published[-1]["volume"] == 1


def test_tick_for_a_past_second_without_a_bar_publishes_it_at_once() -> None:
    feed = Feed()
    feed.tick(tick(5, 100, 1))
    feed.tick(tick(3, 99, 2))
    assert feed.published == [feed.published[0]]
    assert (feed.published[0]["window_start"], feed.published[0]["revision"]) == (T0 + 3000, 0)
    feed.tick(tick(3, 98, 1))
    assert (feed.published[-1]["window_start"], feed.published[-1]["revision"]) == (T0 + 3000, 1)


def test_tick_older_than_the_horizon_goes_to_the_late_topic() -> None:
    feed = Feed(horizon_ms=5_000)
    feed.tick(tick(0, 100, 1))
    feed.tick(tick(20, 100, 1))
    feed.tick(tick(0, 100, 7))
    assert len(feed.published) == 1
    assert feed.late == [
        {
            "symbol": "005930",
            "venue": "KRX",
            "window_start": T0,
            "price": 100,
            "volume": 7,
            "side": "buy",
            "newest_window_start": T0 + 20_000,
        }
    ]
    # The published bar of second 0 has been forgotten (beyond the horizon).
    assert f"005930|KRX|{T0}" not in feed.store


def test_history_is_bounded_by_the_horizon() -> None:
    feed = Feed(horizon_ms=3_000)
    for second in range(50):
        feed.tick(tick(second, 100, 1))
    history = sorted(int(k.split("|")[2]) for k in feed.store if k.count("|") == 2)
    assert history == [T0 + s * 1000 for s in range(46, 49)]


def test_grace_publishes_a_quiet_bar_and_a_later_tick_revises_it() -> None:
    feed = Feed()
    feed.tick(tick(0, 100, 1), wall=10.0)
    feed.quiet(wall=10.5)
    assert feed.published == []
    feed.quiet(wall=11.0)
    assert [(b["window_start"], b["revision"]) for b in feed.published] == [(T0, 0)]
    feed.quiet(wall=20.0)
    assert len(feed.published) == 1  # published once
    feed.tick(tick(0, 101, 1), wall=20.0)
    assert [(b["window_start"], b["revision"]) for b in feed.published][-1] == (T0, 1)
    feed.tick(tick(1, 102, 1), wall=20.1)
    feed.tick(tick(2, 102, 1), wall=20.2)
    assert [(b["window_start"], b["revision"]) for b in feed.published][-1] == (T0 + 1000, 0)


def test_replayed_ticks_are_not_counted_twice() -> None:
    feed = Feed()
    feed.tick(tick(0, 100, 1), offset=10)
    feed.tick(tick(0, 100, 2), offset=11)
    feed.tick(tick(0, 100, 2), offset=11)  # at-least-once redelivery
    feed.tick(tick(0, 100, 1), offset=10)
    feed.tick(tick(1, 100, 1), offset=12)
    assert feed.published[0]["volume"] == 3


def test_symbols_and_venues_have_separate_bars() -> None:
    feed = Feed()
    feed.tick(tick(0, 100, 1, symbol="A"))
    feed.tick(Trade("A", "NXT", T0, 200, 1, BUY))
    feed.tick(tick(0, 300, 1, symbol="B"))
    feed.tick(tick(1, 100, 1, symbol="A"))
    assert [(b["symbol"], b["venue"], b["open"]) for b in feed.published] == [("A", "KRX", 100)]


def test_recent_published_resends_the_latest_bars_per_partition() -> None:
    feed = Feed()
    for second, wall in ((0, 0.0), (1, 1.0), (2, 30.0), (3, 31.0), (4, 32.0)):
        feed.tick(tick(second, 100, 1), wall=wall)
    # Published: second 0 at wall 1, 1 at 30, 2 at 31, 3 at 32.
    again = recent_published(list(feed.store.items()), {0}, window_s=5.0)
    assert [b["window_start"] for b in again] == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert again == feed.published[1:]
    assert recent_published(list(feed.store.items()), {1}, window_s=5.0) == []


def test_trade_from_raw_record() -> None:
    record = {
        "symbol": "005930",
        "venue": "KRX",
        "event_time": None,
        "bsop_date": DAY,
        "stck_cntg_hour": 9 * 3_600_000 + 1000,
        "stck_prpr": 70_000,
        "cntg_vol": 3,
        "ccld_dvsn": "5",
    }
    assert trade_from(record) == Trade("005930", "KRX", T0 + 1000, 70_000, 3, SELL)
    nxt = {**record, "venue": "NXT", "cntg_cls_code": "1"}
    del nxt["ccld_dvsn"]
    assert trade_from(nxt) == Trade("005930", "NXT", T0 + 1000, 70_000, 3, BUY)
    pre_market = {**record, "ccld_dvsn": "3"}
    assert trade_from(pre_market).side == NEUTRAL  # type: ignore[union-attr]
    no_date = {**record, "bsop_date": None, "event_time": T0 + 1500}
    assert trade_from(no_date).second == T0 + 1000  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stck_prpr": None}, "no price"),
        ({"stck_prpr": 0}, "no price"),
        ({"cntg_vol": None}, "no volume"),
        ({"bsop_date": None, "event_time": None}, "no event time"),
        ({"symbol": None}, "no symbol or venue"),
    ],
)
def test_trade_from_rejects_unusable_records(change: dict[str, Any], reason: str) -> None:
    record = {
        "symbol": "005930",
        "venue": "KRX",
        "event_time": None,
        "bsop_date": DAY,
        "stck_cntg_hour": 0,
        "stck_prpr": 1,
        "cntg_vol": 1,
    }
    assert trade_from({**record, **change}) == reason


# ------------------------------------------------------------------------ the Faust agent


def trade_record(second: int, price: int, volume: int, code: str = "1") -> dict[str, Any]:
    return {
        "symbol": "005930",
        "bsop_date": DAY,
        "stck_cntg_hour": 9 * 3_600_000 + second * 1000,
        "stck_prpr": price,
        "cntg_vol": volume,
        "ccld_dvsn": code,
    }


async def test_agent_publishes_bars_revisions_late_ticks_and_quiet_bars() -> None:
    from tests.unit.processors_harness import Harness

    h = Harness(("bars",), bar_horizon=5.0, bar_grace=1.0)
    krx, nxt = "kis.h0stcnt0", "kis.h0nxcnt0"
    clock = "kis-stream-processors-bars-clock"
    async with h.running("bars") as ctx:
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(0, 100, 2)), topic=krx, offset=0)
        assert h.published() == []  # first tick: nothing yet
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(0, 105, 1, "5")), topic=krx)
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(1, 104, 1)), topic=krx)
        bars = h.published("kis.bars.1s")
        assert [(b["window_start"], b["volume"], b["sell_volume"]) for b in bars] == [(T0, 3, 1)]
        assert h.keys("kis.bars.1s") == ["005930|KRX"]
        # Late tick for second 0: a revision.
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(0, 99, 1)), topic=krx)
        assert h.published("kis.bars.1s")[-1]["revision"] == 1
        assert h.published("kis.bars.1s")[-1]["low"] == 99
        # Redelivered (same offset): not counted again.
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(0, 99, 1)), topic=krx, offset=3)
        assert len(h.published("kis.bars.1s")) == 2
        # A garbage value is skipped, the agent keeps going.
        await h.put(ctx, b"\x00\x00\x00\x00\x01junk", topic=krx)
        await h.put(ctx, b"not avro", topic=krx)
        # Another venue, another partition: its own bar.
        nxt_tick = {**trade_record(1, 200, 1), "cntg_cls_code": "1"}
        del nxt_tick["ccld_dvsn"]
        await h.put(ctx, h.encode_raw("H0NXCNT0", nxt_tick), topic=nxt, partition=1)
        # The grace clock of partition 0 publishes the quiet KRX bar of second 1 only.
        await h.put(ctx, json.dumps({"wall": time.time() + 5}).encode(), topic=clock)
        bars = h.published("kis.bars.1s")
        assert [(b["venue"], b["window_start"]) for b in bars[2:]] == [("KRX", T0 + 1000)]
        await h.put(ctx, json.dumps({"wall": time.time() + 5}).encode(), topic=clock, partition=1)
        assert [(b["venue"], b["open"]) for b in h.published("kis.bars.1s")[3:]] == [("NXT", 200)]
        # Much older than the horizon: the late topic.
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(30, 1, 1)), topic=krx)
        await h.put(ctx, h.encode_raw("H0STCNT0", trade_record(2, 1, 1)), topic=krx)
        assert [t["window_start"] for t in h.published("kis.bars.1s.late")] == [T0 + 2000]
    counts = h.p.stats["bars"].counts
    assert counts["skipped: undecodable"] == 2
    assert counts["replayed"] == 1
