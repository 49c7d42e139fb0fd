"""Order-book imbalance per symbol and venue (`kis.book.imbalance`), one record per book update.

Stateless: each record is a pure function of one book snapshot, so a record replayed after a
restart is identical to the first one (same key, same `received_at`). A book with an empty
side at level 1 (auctions, halts, VI) still gives a record, with the metrics null.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Any, cast

import faust

from kis_stream import topics
from processors.codec import WireError
from processors.inputs import Book, book_from_values

if TYPE_CHECKING:
    from processors.app import Processors

# KRX tick-size bands since 2023-01-25 (KOSPI and KOSDAQ alike; NXT uses the KRX grid):
# (lower price bound inclusive, tick size in KRW).
TICK_BANDS: tuple[tuple[int, int], ...] = (
    (0, 1),
    (2_000, 5),
    (5_000, 10),
    (20_000, 50),
    (50_000, 100),
    (200_000, 500),
    (500_000, 1_000),
)


_BAND_LOWERS = tuple(lower for lower, _ in TICK_BANDS)
_BAND_TICKS = tuple(tick for _, tick in TICK_BANDS)


def tick_size(price: float) -> int:
    """The KRX tick size at `price` (the band containing it; below the first: its tick)."""
    band = bisect_right(_BAND_LOWERS, price) - 1
    return _BAND_TICKS[band if band > 0 else 0]


def ticks_between(low: float, high: float) -> float:
    """Number of price ticks from `low` up to `high`, band by band (negative if high < low).

    A spread straddling a band boundary counts the small ticks below it and the large ones
    above: 1,995 -> 2,005 is 5 ticks of 1 KRW plus 1 tick of 5 KRW = 6.
    """
    if high < low:
        return -ticks_between(high, low)
    size = tick_size(low)
    if size == tick_size(high):  # the usual case: one band
        return (high - low) / size
    total = 0.0
    for i, (lower, size) in enumerate(TICK_BANDS):
        upper = TICK_BANDS[i + 1][0] if i + 1 < len(TICK_BANDS) else float("inf")
        overlap = min(high, upper) - max(low, lower)
        if overlap > 0:
            total += overlap / size
    return total


def _ratio(bid: int, ask: int) -> float | None:
    total = bid + ask
    return (bid - ask) / total if total else None


def _depth(quantities: tuple[int | None, ...], levels: int) -> int:
    """Sum of the positive quantities of the first `levels` levels (missing ones count 0)."""
    return sum(q for q in quantities[:levels] if q is not None and q > 0)


def _depths(quantities: tuple[int | None, ...]) -> tuple[int, int]:
    """(`_depth` over 5 levels, over 10 levels) of one side, in one pass for a full book."""
    if len(quantities) == 10 and None not in quantities:
        full = cast("tuple[int, ...]", quantities)
        if min(full) > 0:
            q0, q1, q2, q3, q4, q5, q6, q7, q8, q9 = full
            five = q0 + q1 + q2 + q3 + q4  # (ints: the same sums in any order)
            return five, five + q5 + q6 + q7 + q8 + q9
    return _depth(quantities, 5), _depth(quantities, 10)


def imbalance_record(book: Book) -> dict[str, Any]:
    """The published `kis.book.imbalance` value (schemas/derived/book_imbalance.avsc).

    Imbalances are (bid - ask) / (bid + ask) in [-1, 1]: level 1, the first 5 and 10 levels
    (missing levels count as 0) and KIS' total resting quantities. Microprice weights each
    best price by the opposite side's quantity. Spread in ticks follows the KRX bands.
    """
    bid, ask = book.bid[0], book.ask[0]
    bid_qty, ask_qty = book.bid_qty[0], book.ask_qty[0]
    l1 = depth5 = depth10 = total = mid = microprice = spread = ticks = bps = None
    if (
        bid is not None
        and bid > 0
        and bid_qty is not None
        and bid_qty > 0
        and ask is not None
        and ask > 0
        and ask_qty is not None
        and ask_qty > 0
    ):  # (book.has_bid and book.has_ask, inline: once per input)
        mid = (bid + ask) / 2
        spread = ask - bid
        l1 = (bid_qty - ask_qty) / (bid_qty + ask_qty)
        bid5, bid10 = _depths(book.bid_qty)
        ask5, ask10 = _depths(book.ask_qty)
        depth5 = _ratio(bid5, ask5)
        depth10 = _ratio(bid10, ask10)
        total_bid, total_ask = book.total_bid_qty, book.total_ask_qty
        if total_bid is not None and total_ask is not None and total_bid >= 0 <= total_ask:
            total = _ratio(total_bid, total_ask)
        microprice = (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
        ticks = ticks_between(bid, ask)
        bps = spread / mid * 10_000
    return {
        "symbol": book.symbol,
        "venue": book.venue,
        "event_time": book.event_time,
        "received_at": book.received_at,
        "best_bid": bid,
        "best_ask": ask,
        "best_bid_qty": bid_qty,
        "best_ask_qty": ask_qty,
        "imbalance_l1": l1,
        "imbalance_depth5": depth5,
        "imbalance_depth10": depth10,
        "imbalance_total": total,
        "mid": mid,
        "microprice": microprice,
        "spread": spread,
        "spread_ticks": ticks,
        "spread_bps": bps,
    }


# ---------------------------------------------------------------------------- the agent


def register(p: Processors) -> None:
    """Add the imbalance agent (no state) to the app."""
    stats = p.stats["imbalance"]
    out = p.output(topics.BOOK_IMBALANCE)

    @p.app.agent(p.raw_input(*p.topology.inputs("imbalance")), name="imbalance", concurrency=1)
    async def imbalance(stream: faust.StreamT[bytes]) -> None:
        values_of = p.decoders["imbalance"].values
        async for records in p.batches(stream):  # (stateless: a batch's records at once)
            published = 0
            for message in records:
                try:
                    values = values_of(message.value)
                except WireError as exc:
                    stats.skip("undecodable", exc)
                    continue
                book = book_from_values(values)
                if isinstance(book, str):
                    stats.skip(book, values[0])  # (the symbol)
                    continue
                await out.send(key=f"{book.symbol}|{book.venue}", value=imbalance_record(book))
                published += 1
            stats.inc("consumed", records.taken)
            stats.inc("published", published)
