"""KRX tick-size rules (호가가격단위, since 2023): the price grid every domestic quote sits on."""

from __future__ import annotations

_BANDS: tuple[tuple[int, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
)


def tick_size(price: int) -> int:
    """Tick size for a price: 1/5/10/50/100/500/1000 KRW by band."""
    for bound, tick in _BANDS:
        if price < bound:
            return tick
    return 1_000


def tick_up(price: int) -> int:
    return price + tick_size(price)


def tick_down(price: int) -> int:
    """The next valid price below `price` (the band below a boundary has the smaller tick)."""
    return price - tick_size(price - 1)


def floor_to_tick(price: float) -> int:
    p = max(1, int(price))
    return p - p % tick_size(p)


def is_valid_price(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0
