"""A 10-level limit order book on a price grid, mutated by the market's order flow.

Levels are kept contiguous on the grid from the best price outwards, so the book can never
cross: quotes improve only strictly inside the spread, and trades only remove liquidity.
"""

from __future__ import annotations

from collections.abc import Callable

from simulator.ticks import floor_to_tick, tick_down, tick_up

LEVELS = 10
Depth = Callable[[int], int]
"""level index (0 = best) -> a fresh resting quantity for a level created there."""


class Book:
    __slots__ = ("ask_px", "ask_qty", "bid_px", "bid_qty", "down", "up")

    def __init__(
        self,
        ask_px: list[int],
        ask_qty: list[int],
        bid_px: list[int],
        bid_qty: list[int],
        *,
        up: Callable[[int], int] = tick_up,
        down: Callable[[int], int] = tick_down,
    ) -> None:
        self.ask_px, self.ask_qty = ask_px, ask_qty
        self.bid_px, self.bid_qty = bid_px, bid_qty
        self.up, self.down = up, down

    @classmethod
    def around(
        cls,
        price: float,
        depth: Depth,
        *,
        up: Callable[[int], int] = tick_up,
        down: Callable[[int], int] = tick_down,
        floor: Callable[[float], int] = floor_to_tick,
    ) -> Book:
        """A fresh book whose best bid is the grid price at or below `price`."""
        bid = floor(price)
        ask = up(bid)
        ask_px, bid_px = [ask], [bid]
        for _ in range(LEVELS - 1):
            ask_px.append(up(ask_px[-1]))
            bid_px.append(max(0, down(bid_px[-1])) if bid_px[-1] > 0 else 0)
        return cls(
            ask_px,
            [depth(i) for i in range(LEVELS)],
            bid_px,
            [depth(i) if bid_px[i] > 0 else 0 for i in range(LEVELS)],
            up=up,
            down=down,
        )

    @property
    def best_ask(self) -> int:
        return self.ask_px[0]

    @property
    def best_bid(self) -> int:
        return self.bid_px[0]

    @property
    def mid(self) -> float:
        return (self.ask_px[0] + self.bid_px[0]) / 2

    def total_ask(self) -> int:
        return sum(self.ask_qty)

    def total_bid(self) -> int:
        return sum(self.bid_qty)

    def spread_ticks(self) -> int:
        n, p = 0, self.bid_px[0]
        while p < self.ask_px[0] and n < 1000:
            p = self.up(p)
            n += 1
        return n

    def take_asks(self, qty: int, depth: Depth) -> list[tuple[int, int]]:
        """A buy order sweeping the asks: the (price, quantity) fills, best price first."""
        return self._take(self.ask_px, self.ask_qty, qty, depth, self.up)

    def take_bids(self, qty: int, depth: Depth) -> list[tuple[int, int]]:
        return self._take(self.bid_px, self.bid_qty, qty, depth, self._down_or_zero)

    def _down_or_zero(self, price: int) -> int:
        return self.down(price) if price > 1 else 0

    @staticmethod
    def _take(
        px: list[int], qty_at: list[int], qty: int, depth: Depth, further: Callable[[int], int]
    ) -> list[tuple[int, int]]:
        fills: list[tuple[int, int]] = []
        while qty > 0 and px[0] > 0:
            resting = qty_at[0]
            if qty < resting:
                qty_at[0] = resting - qty
                fills.append((px[0], qty))
                break
            fills.append((px[0], resting))
            qty -= resting
            px.pop(0)
            qty_at.pop(0)
            last = px[-1]
            nxt = further(last) if last > 0 else 0
            px.append(nxt)
            qty_at.append(depth(LEVELS - 1) if nxt > 0 else 0)
        return fills

    def improve_ask(self, qty: int) -> bool:
        """A new sell order one tick inside the spread; False if the spread is one tick."""
        price = self.down(self.ask_px[0])
        if price <= self.bid_px[0]:
            return False
        self.ask_px.insert(0, price)
        self.ask_qty.insert(0, qty)
        self.ask_px.pop()
        self.ask_qty.pop()
        return True

    def improve_bid(self, qty: int) -> bool:
        price = self.up(self.bid_px[0])
        if price >= self.ask_px[0]:
            return False
        self.bid_px.insert(0, price)
        self.bid_qty.insert(0, qty)
        self.bid_px.pop()
        self.bid_qty.pop()
        return True

    def pull(self, ask: bool, depth: Depth) -> None:
        """The best level on one side cancelled; a new level appears at the far end."""
        if ask:
            self.ask_px.pop(0)
            self.ask_qty.pop(0)
            self.ask_px.append(self.up(self.ask_px[-1]))
            self.ask_qty.append(depth(LEVELS - 1))
        else:
            self.bid_px.pop(0)
            self.bid_qty.pop(0)
            nxt = self._down_or_zero(self.bid_px[-1]) if self.bid_px[-1] > 0 else 0
            self.bid_px.append(nxt)
            self.bid_qty.append(depth(LEVELS - 1) if nxt > 0 else 0)

    def requote(self, ask: bool, level: int, delta: int) -> None:
        """Orders added (delta > 0) or cancelled at a level; a level never empties this way."""
        qty_at = self.ask_qty if ask else self.bid_qty
        px = self.ask_px if ask else self.bid_px
        if px[level] > 0:
            qty_at[level] = max(1, qty_at[level] + delta)
