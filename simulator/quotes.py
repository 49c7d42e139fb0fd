"""Displayed books: a venue's 10 levels a side, and the unified (KRX + NXT) book."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import add

from simulator.book import LEVELS, Book


class Quote:
    """A venue's displayed book: 10 levels a side; price 0 marks an empty level.

    A snapshot for the records of one market event: the totals are taken when it is made
    (a plain class, not a dataclass: a few are made for every event).
    """

    __slots__ = ("ask_px", "ask_qty", "bid_px", "bid_qty", "total_ask", "total_bid")

    def __init__(
        self, ask_px: list[int], ask_qty: list[int], bid_px: list[int], bid_qty: list[int]
    ) -> None:
        self.ask_px, self.ask_qty, self.bid_px, self.bid_qty = ask_px, ask_qty, bid_px, bid_qty
        self.total_ask = sum(ask_qty)
        self.total_bid = sum(bid_qty)


def ladder(start: int, step: Callable[[int], int], n: int = LEVELS) -> list[int]:
    out = [start]
    for _ in range(n - 1):
        out.append(step(out[-1]) if out[-1] > 1 else 0)
    return out


def _merge_side(
    sides: list[tuple[list[int], list[int]]], best_first_desc: bool
) -> tuple[list[int], list[int]]:
    totals = dict(zip(*sides[0], strict=True))
    get = totals.get
    for px, qty in sides[1:]:
        for p, n in zip(px, qty, strict=True):
            totals[p] = get(p, 0) + n
    totals.pop(0, None)  # empty levels
    prices = sorted(totals, reverse=best_first_desc)[:LEVELS]
    qtys = [totals[p] for p in prices]
    if len(prices) < LEVELS:
        pad = [0] * (LEVELS - len(prices))
        prices += pad
        qtys += pad
    return prices, qtys


def _merge_ladders(
    a_px: list[int], a_qty: list[int], b_px: list[int], b_qty: list[int], asks: bool
) -> tuple[list[int], list[int]] | None:
    """Two full contiguous ladders on one grid: the better one's prices, quantities summed.

    None when the shortcut does not apply (empty levels, ladders not aligned on one grid).
    """
    if not (a_px[-1] and b_px[-1]):
        return None
    if (b_px[0] < a_px[0]) if asks else (b_px[0] > a_px[0]):
        a_px, a_qty, b_px, b_qty = b_px, b_qty, a_px, a_qty
    try:
        offset = a_px.index(b_px[0])
    except ValueError:
        # b starts beyond a's ten levels: nothing of b is in the top ten
        beyond = b_px[0] > a_px[-1] if asks else b_px[0] < a_px[-1]
        return (list(a_px), list(a_qty)) if beyond else None
    if a_px[-1] != b_px[LEVELS - 1 - offset]:
        return None
    return list(a_px), [*a_qty[:offset], *map(add, a_qty[offset:], b_qty)]


def merge_quotes(quotes: Iterable[Quote]) -> Quote:
    """The unified book: quantities summed per price across venues, best 10 a side."""
    quotes = list(quotes)
    if len(quotes) == 2:
        a, b = quotes
        asks = _merge_ladders(a.ask_px, a.ask_qty, b.ask_px, b.ask_qty, True)
        bids = _merge_ladders(a.bid_px, a.bid_qty, b.bid_px, b.bid_qty, False)
        if asks is not None and bids is not None:
            return Quote(asks[0], asks[1], bids[0], bids[1])
    ask_px, ask_qty = _merge_side([(q.ask_px, q.ask_qty) for q in quotes], False)
    bid_px, bid_qty = _merge_side([(q.bid_px, q.bid_qty) for q in quotes], True)
    return Quote(ask_px, ask_qty, bid_px, bid_qty)


def book_quote(book: Book) -> Quote:
    """A view of the book's levels (not a copy: records are formatted before it changes)."""
    return Quote(book.ask_px, book.ask_qty, book.bid_px, book.bid_qty)
