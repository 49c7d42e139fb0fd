"""The imbalance record equals a plain, obviously-correct computation, bit for bit.

The published records are compared exactly by the end-to-end oracle, so the shortcuts of
`imbalance_record` (depths of a full book in one pass, the tick band by bisection, level-1
checks inline) must not change any value: here a direct transcription of the definitions
(the code before those shortcuts) is the reference, over random books with empty, zero,
negative and missing levels, band-straddling and crossed spreads, and garbage fields.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from processors.imbalance import TICK_BANDS, imbalance_record, tick_size
from processors.inputs import BOOK_COLUMNS, Book, book_from, book_from_values


def _ref_tick_size(price: float) -> int:
    size = TICK_BANDS[0][1]
    for lower, band_tick in TICK_BANDS:
        if price < lower:
            break
        size = band_tick
    return size


def _ref_ticks_between(low: float, high: float) -> float:
    if high < low:
        return -_ref_ticks_between(high, low)
    size = _ref_tick_size(low)
    if size == _ref_tick_size(high):
        return (high - low) / size
    total = 0.0
    for i, (lower, size) in enumerate(TICK_BANDS):
        upper = TICK_BANDS[i + 1][0] if i + 1 < len(TICK_BANDS) else float("inf")
        overlap = min(high, upper) - max(low, lower)
        if overlap > 0:
            total += overlap / size
    return total


def _ref_ratio(bid: int, ask: int) -> float | None:
    total = bid + ask
    return (bid - ask) / total if total else None


def _ref_depth(quantities: tuple[int | None, ...], levels: int) -> int:
    return sum(q for q in quantities[:levels] if q is not None and q > 0)


def _ref_level(price: int | None, qty: int | None) -> bool:
    return price is not None and price > 0 and qty is not None and qty > 0


def _reference(book: Book) -> dict[str, Any]:
    bid, ask = book.bid[0], book.ask[0]
    bid_qty, ask_qty = book.bid_qty[0], book.ask_qty[0]
    metrics: dict[str, Any] = dict.fromkeys(
        ("l1", "d5", "d10", "total", "mid", "micro", "spread", "ticks", "bps")
    )
    if _ref_level(bid, bid_qty) and _ref_level(ask, ask_qty):
        assert bid is not None and ask is not None and bid_qty is not None and ask_qty is not None
        mid = (bid + ask) / 2
        spread = ask - bid
        total = None
        tb, ta = book.total_bid_qty, book.total_ask_qty
        if tb is not None and ta is not None and tb >= 0 <= ta:
            total = _ref_ratio(tb, ta)
        metrics = {
            "l1": _ref_ratio(bid_qty, ask_qty),
            "d5": _ref_ratio(_ref_depth(book.bid_qty, 5), _ref_depth(book.ask_qty, 5)),
            "d10": _ref_ratio(_ref_depth(book.bid_qty, 10), _ref_depth(book.ask_qty, 10)),
            "total": total,
            "mid": mid,
            "micro": (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty),
            "spread": spread,
            "ticks": _ref_ticks_between(bid, ask),
            "bps": spread / mid * 10_000,
        }
    return {
        "symbol": book.symbol,
        "venue": book.venue,
        "event_time": book.event_time,
        "received_at": book.received_at,
        "best_bid": bid,
        "best_ask": ask,
        "best_bid_qty": bid_qty,
        "best_ask_qty": ask_qty,
        "imbalance_l1": metrics["l1"],
        "imbalance_depth5": metrics["d5"],
        "imbalance_depth10": metrics["d10"],
        "imbalance_total": metrics["total"],
        "mid": metrics["mid"],
        "microprice": metrics["micro"],
        "spread": metrics["spread"],
        "spread_ticks": metrics["ticks"],
        "spread_bps": metrics["bps"],
    }


def _bits(record: dict[str, Any]) -> list[Any]:
    """Values with floats as their bytes (exact, and -0.0 told from 0.0)."""
    return [
        (k, struct.pack("<d", v) if isinstance(v, float) else v, type(v)) for k, v in record.items()
    ]


def _random_record(rng: random.Random) -> dict[str, Any]:
    base = rng.choice([150, 1_995, 2_000, 4_990, 19_950, 49_950, 70_000, 199_500, 990_000])
    step = rng.choice([1, 5, 10, 50, 100, 500, 1_000])
    record: dict[str, Any] = {"symbol": "005930", "venue": rng.choice(["KRX", "NXT", "UN"])}
    record["received_at"] = rng.randint(0, 2**60)
    record["event_time"] = rng.choice([None, rng.randint(0, 2**45)])

    def quantity() -> Any:
        roll = rng.random()
        if roll < 0.05:
            return None
        if roll < 0.1:
            return rng.choice([0, -3, True, "7", 2**62])
        return rng.randint(1, 10 ** rng.randint(1, 9))

    for i in range(1, 11):
        gap = rng.choice([0, 1, 1, 1, 2, -1])  # -1: a crossed book
        record[f"bidp{i}"] = base - step * (i - 1)
        record[f"askp{i}"] = base + step * gap + step * (i - 1)
        record[f"bidp_rsqn{i}"] = quantity()
        record[f"askp_rsqn{i}"] = quantity()
    for name in rng.sample(sorted(record)[:40], rng.choice([0, 0, 0, 1, 5])):
        record[name] = None if rng.random() < 0.7 else 0  # empty sides, missing levels
    record["total_bidp_rsqn"] = rng.choice([None, -1, 0, rng.randint(0, 10**9)])
    record["total_askp_rsqn"] = rng.choice([None, 0, rng.randint(0, 10**9)])
    return record


@pytest.mark.parametrize("seed", range(4))
def test_record_equals_the_reference_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3_000):
        record = _random_record(rng)
        book = book_from(record)
        assert not isinstance(book, str)
        assert _bits(imbalance_record(book)) == _bits(_reference(book))
        values = tuple(record.get(name) for name in BOOK_COLUMNS)
        assert book_from_values(values) == book


def test_short_books_built_by_hand_equal_the_reference() -> None:
    book = Book("1", "KRX", None, 1, (101,), (100,), (4,), (3,), None, None)
    assert _bits(imbalance_record(book)) == _bits(_reference(book))


@pytest.mark.parametrize("price", [-5, 0, 1, 1_999, 2_000, 2_000.5, 499_999, 500_000, 10**9])
def test_tick_size_equals_the_band_scan(price: float) -> None:
    assert tick_size(price) == _ref_tick_size(price)
