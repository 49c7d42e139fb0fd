"""Overseas symbols (HDFSCNT0 trades / HDFSASP0 books) such as DNASAAPL: 4-decimal prices.

Prices are held in 1/10,000 USD (integers, cent grid) so the wire strings are exact. The
exchange's local time comes from America/New_York; the market trades whatever the hour
(KIS also serves US day-time sessions), which keeps a Korean-morning demo alive.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from zoneinfo import ZoneInfo

from simulator.book import LEVELS, Book
from simulator.clock import KST, hhmmss
from simulator.tape import Tape

CENT = 100  # one cent in price units (1/10,000 USD)
KNOWN_OVERSEAS = {"AAPL": ("APPLE INC", 190.0), "NVDA": ("NVIDIA CORP", 120.0)}
KNOWN_OVERSEAS["TSLA"] = ("TESLA INC", 250.0)
KNOWN_OVERSEAS["MSFT"] = ("MICROSOFT CORP", 420.0)
try:
    NEW_YORK: dt.tzinfo = ZoneInfo("America/New_York")
except Exception:  # no tz database: fall back to EST
    NEW_YORK = dt.timezone(dt.timedelta(hours=-5))

Build = Callable[[], dict[str, str]]


def fmt4(units: int) -> str:
    """1/10,000 units -> '189.8400'."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // 10_000}.{units % 10_000:04d}"


def _cent_floor(x: float) -> int:
    v = int(x)
    return v - v % CENT


class OverseasSymbol:
    def __init__(self, rsym: str, seed: int, t: float, daily_vol: float) -> None:
        self.rsym = rsym
        self.symb = rsym[4:] if len(rsym) > 4 else rsym
        self.rng = random.Random(f"{seed}:{rsym}")
        name, prev = KNOWN_OVERSEAS.get(self.symb) or (self.symb, self.rng.uniform(20, 500))
        self.name = name
        self.prev_close = _cent_floor(prev * 10_000)
        self.fair = float(self.prev_close)
        self.last_t = t
        self.sigma = daily_vol / math.sqrt(6.5 * 3600)
        self.book = Book.around(
            self.fair,
            self._depth,
            up=lambda p: p + CENT,
            down=lambda p: p - CENT,
            floor=_cent_floor,
        )
        self.tape = Tape()
        self._prev_levels = self._levels()

    def _depth(self, level: int) -> int:
        return max(1, int(self.rng.lognormvariate(math.log(300), 0.7) * (1 + 0.1 * level)))

    def _levels(self) -> tuple[list[int], list[int]]:
        return list(self.book.bid_qty), list(self.book.ask_qty)

    def bid(self) -> int:
        return self.book.best_bid

    def ask(self) -> int:
        return self.book.best_ask

    def event(self, t: float, date: dt.date) -> list[tuple[str, Build]]:
        rng, book = self.rng, self.book
        dt_ = max(t - self.last_t, 0.001)
        self.last_t = max(self.last_t, t)
        self.fair *= math.exp(self.sigma * math.sqrt(dt_) * rng.gauss(0.0, 1.0))
        prev_levels = self._prev_levels
        out: list[tuple[str, Build]] = []
        gap = (self.fair - book.mid) / CENT
        if rng.random() < 0.4:
            buy = rng.random() < min(0.9, max(0.1, 0.5 + 0.2 * gap))
            side_qty = book.ask_qty if buy else book.bid_qty
            qty = min(max(1, int(rng.lognormvariate(math.log(40), 1.0))), sum(side_qty[:3]))
            fills = book.take_asks(qty, self._depth) if buy else book.take_bids(qty, self._depth)
            for px, q in fills:
                self.tape.apply(px, q, buy, t)
                out.append(("HDFSCNT0", self._trade_builder(t, date, px, q)))
        elif abs(gap) > 1 and rng.random() < 0.5 and book.bid_px[1] > 0:
            book.pull(ask=gap > 0, depth=self._depth)
        elif book.up(book.bid_px[0]) < book.ask_px[0]:
            if gap >= 0:
                book.improve_bid(self._depth(0))
            else:
                book.improve_ask(self._depth(0))
        else:
            level = min(LEVELS - 1, int(rng.expovariate(0.6)))
            book.requote(rng.random() < 0.5, level, int(self._depth(level) * (rng.random() - 0.45)))
        self._prev_levels = self._levels()
        out.append(("HDFSASP0", self._book_builder(t, date, prev_levels)))
        return out

    def _times(self, t: float, date: dt.date) -> dict[str, str]:
        korea = dt.datetime.combine(date, dt.time(0), tzinfo=KST) + dt.timedelta(seconds=t)
        local = korea.astimezone(NEW_YORK)
        return {
            "RSYM": self.rsym,
            "SYMB": self.symb,
            "ZDIV": "4",
            "TYMD": local.strftime("%Y%m%d"),
            "XYMD": local.strftime("%Y%m%d"),
            "XHMS": local.strftime("%H%M%S"),
            "KYMD": korea.strftime("%Y%m%d"),
            "KHMS": hhmmss(t),
        }

    def _trade_builder(self, t: float, date: dt.date, price: int, qty: int) -> Build:
        tape = self.tape
        snapshot = (tape.open, tape.high, tape.low, tape.volume, tape.amount)
        sides = (tape.buy_qty, tape.sell_qty)
        bid, ask = self.book.best_bid, self.book.best_ask
        bid_q, ask_q = self.book.bid_qty[0], self.book.ask_qty[0]

        def build() -> dict[str, str]:
            open_, high, low, volume, amount = snapshot
            diff = price - self.prev_close
            rec = self._times(t, date)
            rec.update(
                OPEN=fmt4(open_),
                HIGH=fmt4(high),
                LOW=fmt4(low),
                LAST=fmt4(price),
                SIGN="2" if diff > 0 else "3" if diff == 0 else "5",
                DIFF=fmt4(abs(diff)),
                RATE=f"{diff * 100 / self.prev_close:+.2f}",
                PBID=fmt4(bid),
                PASK=fmt4(ask),
                VBID=str(bid_q),
                VASK=str(ask_q),
                EVOL=str(qty),
                TVOL=str(volume),
                TAMT=str(amount // 10_000),
                BIVL=str(sides[0]),
                ASVL=str(sides[1]),
                STRN=f"{sides[0] * 100 / sides[1]:.2f}" if sides[1] else "0.00",
                MTYP="1",
            )
            return rec

        return build

    def _book_builder(self, t: float, date: dt.date, prev: tuple[list[int], list[int]]) -> Build:
        book = self.book
        bid_px, ask_px = list(book.bid_px), list(book.ask_px)
        bid_q, ask_q = list(book.bid_qty), list(book.ask_qty)

        def build() -> dict[str, str]:
            rec = self._times(t, date)
            rec.update(
                BVOL=str(sum(bid_q)),
                AVOL=str(sum(ask_q)),
                BDVL=str(sum(bid_q) - sum(prev[0])),
                ADVL=str(sum(ask_q) - sum(prev[1])),
            )
            for i in range(LEVELS):
                n = i + 1
                rec[f"PBID{n}"] = fmt4(bid_px[i])
                rec[f"PASK{n}"] = fmt4(ask_px[i])
                rec[f"VBID{n}"] = str(bid_q[i])
                rec[f"VASK{n}"] = str(ask_q[i])
                rec[f"DBID{n}"] = str(bid_q[i] - prev[0][i])
                rec[f"DASK{n}"] = str(ask_q[i] - prev[1][i])
            return rec

        return build
