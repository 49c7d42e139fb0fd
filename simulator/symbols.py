"""Per-symbol state of the domestic market: reference data, both venues' books and tapes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.book import LEVELS, Book
from simulator.fields import Midpoint, Reference
from simulator.tape import ProgramFlow, Tape
from simulator.ticks import floor_to_tick, tick_size, tick_up

DEFAULT_SYMBOLS = ("005930", "000660", "035420", "005380", "051910")
DEFAULT_OVERSEAS = ("DNASAAPL", "DNASNVDA")

# code -> (name, previous close, listed shares, previous day's volume)
KNOWN_SYMBOLS: dict[str, tuple[str, int, int, int]] = {
    "005930": ("삼성전자", 71_000, 5_969_782_550, 15_000_000),
    "000660": ("SK하이닉스", 185_000, 728_002_365, 3_000_000),
    "035420": ("NAVER", 205_000, 158_437_008, 700_000),
    "005380": ("현대차", 245_000, 209_416_191, 600_000),
    "051910": ("LG화학", 340_000, 70_592_343, 300_000),
}

TRADE_NOTIONAL_MU = math.log(3_000_000)  # median trade ~3M KRW
LEVEL_NOTIONAL_MU = math.log(30_000_000)  # median resting level ~30M KRW


@dataclass(slots=True)
class Venue:
    name: str
    book: Book
    depth: Callable[[int], int]
    tape: Tape = field(default_factory=Tape)
    program: ProgramFlow = field(default_factory=ProgramFlow)
    mid: Midpoint = field(default_factory=Midpoint)
    last_totals: tuple[int, int] = (0, 0)
    un_last_totals: tuple[int, int] = (0, 0)


@dataclass(slots=True)
class KrxAuction:
    """A KRX single-price auction in progress: 'B' opening, 'A' closing, 'C' VI."""

    kind: str
    price: int = 0
    qty: int = 0
    bid_ready: bool = False
    ask_ready: bool = False
    ask_qty: list[int] = field(default_factory=lambda: [0] * LEVELS)
    bid_qty: list[int] = field(default_factory=lambda: [0] * LEVELS)
    ends: float | None = None


class DomesticSymbol:
    def __init__(self, code: str, seed: int, t: float) -> None:
        self.rng = random.Random(f"{seed}:{code}")
        name, prev, shares, prev_vol = KNOWN_SYMBOLS.get(code) or self._invent(code)
        upper = floor_to_tick(prev * 1.3)
        lower = floor_to_tick(prev * 0.7)
        if lower < prev * 0.7:
            lower = tick_up(lower)
        self.ref = Reference(code, name, prev, upper, lower, shares, prev_vol)
        self.fair = prev * math.exp(self.rng.gauss(0.0, 0.005))
        self.div = 0.0
        self.last_t = t
        self.krx = Venue("KRX", Book.around(self.fair, self._depth_fn(1.0)), self._depth_fn(1.0))
        self.nxt = Venue("NXT", Book.around(self.fair, self._depth_fn(0.3)), self._depth_fn(0.3))
        self.un = Tape()
        self.auction: KrxAuction | None = None
        self.vi_ref = prev

    def _invent(self, code: str) -> tuple[str, int, int, int]:
        prev = floor_to_tick(math.exp(self.rng.uniform(math.log(3_000), math.log(300_000))))
        return (f"종목{code}", prev, 100_000_000, 1_000_000)

    def _depth_fn(self, scale: float) -> Callable[[int], int]:
        rng = self.rng

        def depth(level: int) -> int:
            notional = rng.lognormvariate(LEVEL_NOTIONAL_MU, 0.6) * (1 + 0.12 * level) * scale
            return max(1, int(notional / max(1.0, self.fair)))

        return depth

    def target(self, venue: Venue) -> float:
        if venue is self.krx:
            return self.fair
        return self.fair + self.div * tick_size(int(self.fair))
