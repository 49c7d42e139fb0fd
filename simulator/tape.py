"""Cumulative day statistics of one venue (or of both, for the unified TRs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Tape:
    """Everything a trade record reports cumulatively: OHLC with times, volume, amount, sides."""

    open: int = 0
    high: int = 0
    low: int = 0
    last: int = 0
    open_t: float = 0.0
    high_t: float = 0.0
    low_t: float = 0.0
    volume: int = 0
    amount: int = 0
    sell_count: int = 0
    buy_count: int = 0
    sell_qty: int = 0
    buy_qty: int = 0

    def apply(self, price: int, qty: int, buy: bool, t: float) -> None:
        if self.volume == 0:
            self.open = self.high = self.low = price
            self.open_t = self.high_t = self.low_t = t
        elif price > self.high:
            self.high, self.high_t = price, t
        elif price < self.low:
            self.low, self.low_t = price, t
        self.last = price
        self.volume += qty
        self.amount += price * qty
        if buy:
            self.buy_count += 1
            self.buy_qty += qty
        else:
            self.sell_count += 1
            self.sell_qty += qty


@dataclass(slots=True)
class ProgramFlow:
    """Program-trading totals for the day (프로그램매매), cumulative like KIS reports them."""

    sell_qty: int = 0
    sell_amount: int = 0
    buy_qty: int = 0
    buy_amount: int = 0
    sell_rest: int = 0
    buy_rest: int = 0

    def add(self, price: int, qty: int, buy: bool) -> None:
        if buy:
            self.buy_qty += qty
            self.buy_amount += price * qty
        else:
            self.sell_qty += qty
            self.sell_amount += price * qty

    def plus(self, other: ProgramFlow) -> ProgramFlow:
        return ProgramFlow(
            self.sell_qty + other.sell_qty,
            self.sell_amount + other.sell_amount,
            self.buy_qty + other.buy_qty,
            self.buy_amount + other.buy_amount,
            self.sell_rest + other.sell_rest,
            self.buy_rest + other.buy_rest,
        )
