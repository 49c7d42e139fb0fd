"""Book imbalance: the math on edge cases, then the Faust agent."""

from __future__ import annotations

from typing import Any

import pytest

from processors.imbalance import imbalance_record, tick_size, ticks_between
from processors.inputs import Book, book_from

METRICS = (
    "imbalance_l1",
    "imbalance_depth5",
    "imbalance_depth10",
    "imbalance_total",
    "mid",
    "microprice",
    "spread",
    "spread_ticks",
    "spread_bps",
)


def book_record(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"symbol": "005930", "venue": "KRX", "received_at": 1}
    for i, (price, qty) in enumerate(bids, start=1):
        record[f"bidp{i}"], record[f"bidp_rsqn{i}"] = price, qty
    for i, (price, qty) in enumerate(asks, start=1):
        record[f"askp{i}"], record[f"askp_rsqn{i}"] = price, qty
    record.update(extra)
    return record


def book(*args: Any, **kwargs: Any) -> Book:
    result = book_from(book_record(*args, **kwargs))
    assert isinstance(result, Book)
    return result


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        (1, 1),
        (1_999, 1),
        (2_000, 5),
        (4_995, 5),
        (5_000, 10),
        (19_990, 10),
        (20_000, 50),
        (49_950, 50),
        (50_000, 100),
        (199_900, 100),
        (200_000, 500),
        (500_000, 1_000),
    ],
)
def test_krx_tick_bands(price: int, tick: int) -> None:
    assert tick_size(price) == tick


def test_ticks_between_counts_band_by_band() -> None:
    assert ticks_between(70_000, 70_100) == 1
    assert ticks_between(70_000, 70_500) == 5
    assert ticks_between(1_995, 2_005) == 6  # 5 x 1 KRW + 1 x 5 KRW
    assert ticks_between(49_950, 50_100) == 2  # 1 x 50 + 1 x 100
    assert ticks_between(70_100, 70_000) == -1  # crossed book


def test_full_book() -> None:
    bids = [(70_000 - 100 * i, 10 * (i + 1)) for i in range(10)]
    asks = [(70_100 + 100 * i, 5 * (i + 1)) for i in range(10)]
    record = imbalance_record(
        book(bids, asks, total_bidp_rsqn=1_000, total_askp_rsqn=3_000, event_time=7)
    )
    bid5, ask5 = sum(10 * (i + 1) for i in range(5)), sum(5 * (i + 1) for i in range(5))
    bid10, ask10 = sum(10 * (i + 1) for i in range(10)), sum(5 * (i + 1) for i in range(10))
    assert record == {
        "symbol": "005930",
        "venue": "KRX",
        "event_time": 7,
        "received_at": 1,
        "best_bid": 70_000,
        "best_ask": 70_100,
        "best_bid_qty": 10,
        "best_ask_qty": 5,
        "imbalance_l1": (10 - 5) / 15,
        "imbalance_depth5": (bid5 - ask5) / (bid5 + ask5),
        "imbalance_depth10": (bid10 - ask10) / (bid10 + ask10),
        "imbalance_total": (1_000 - 3_000) / 4_000,
        "mid": 70_050.0,
        "microprice": (70_000 * 5 + 70_100 * 10) / 15,
        "spread": 100,
        "spread_ticks": 1.0,
        "spread_bps": 100 / 70_050 * 10_000,
    }


def test_missing_deeper_levels_count_as_zero() -> None:
    record = imbalance_record(book([(100, 3)], [(101, 1), (102, 4)]))
    assert record["imbalance_depth5"] == (3 - 5) / 8
    assert record["imbalance_depth10"] == (3 - 5) / 8
    assert record["imbalance_total"] is None  # KIS sent no totals


@pytest.mark.parametrize(
    ("bids", "asks"),
    [
        ([], [(101, 1)]),  # no bid at all
        ([(100, 1)], []),
        ([(0, 0)], [(101, 1)]),  # KIS zeros in an auction
        ([(100, 0)], [(101, 1)]),  # price without quantity
        ([], []),
    ],
)
def test_an_empty_side_gives_nulls_not_errors(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]]
) -> None:
    record = imbalance_record(book(bids, asks, total_bidp_rsqn=5, total_askp_rsqn=5))
    assert all(record[name] is None for name in METRICS)
    assert record["symbol"] == "005930"


def test_book_from_rejects_records_without_identity() -> None:
    assert book_from({"symbol": "005930", "venue": "KRX"}) == "no received_at"
    assert book_from({"venue": "KRX", "received_at": 1}) == "no symbol or venue"


async def test_agent_publishes_one_record_per_book_update_including_empty_books() -> None:
    from tests.unit.processors_harness import Harness

    h = Harness(("imbalance",))
    async with h.running("imbalance") as ctx:
        full = book_record([(70_000, 10)], [(70_100, 5)], received_at=11)
        await h.put(ctx, h.encode_raw("H0STASP0", full), topic="kis.h0stasp0")
        auction = book_record([], [], received_at=12, venue="NXT")
        await h.put(ctx, h.encode_raw("H0NXASP0", auction), topic="kis.h0nxasp0", partition=2)
        await h.put(ctx, b"\x00garbage", topic="kis.h0stasp0")
        unified = book_record([(70_000, 1)], [(70_100, 1)], received_at=13, venue="UN")
        await h.put(ctx, h.encode_raw("H0UNASP0", unified), topic="kis.h0unasp0")
    records = h.published("kis.book.imbalance")
    assert [(r["venue"], r["received_at"]) for r in records] == [
        ("KRX", 11),
        ("NXT", 12),
        ("UN", 13),
    ]
    assert h.keys("kis.book.imbalance") == ["005930|KRX", "005930|NXT", "005930|UN"]
    assert records[0]["imbalance_l1"] == 5 / 15
    assert all(records[1][name] is None for name in METRICS)
    assert h.p.stats["imbalance"].counts["skipped: undecodable"] == 1
