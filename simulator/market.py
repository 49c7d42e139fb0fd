"""A deterministic two-venue (KRX + NXT) market, generating KIS records for every TR.

Per symbol: a fair value on a random walk, a KRX and an NXT 10-level book pulled towards it
by order flow (NXT's fair value = KRX's plus a small mean-reverting divergence), trades that
sweep those books, cumulative tapes per venue and unified, program-trading counters, KRX
single-price auctions (08:30-09:00, 15:20-15:30, and VI halts) and market-status changes.

Determinism: every symbol owns a `random.Random` seeded from (seed, symbol) and draws from
it in event order only, and records are formatted only for (tr_id, key) pairs somebody has
subscribed to (`wanted`) without touching the RNG, so the same seed and the same
subscriptions give the same records whatever the pace at which they are pulled.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections.abc import Callable, Container
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from simulator import fields
from simulator.book import LEVELS, Book
from simulator.fields import Auction, Quote, RowLayout
from simulator.orders import OrderDesk
from simulator.overseas import OverseasSymbol
from simulator.quotes import book_quote, ladder, merge_quotes
from simulator.schedule import (
    BOUNDARIES,
    KRX_SCHEDULE,
    KRX_STATUS,
    NXT_MARKET_CLS,
    NXT_SCHEDULE,
    NXT_STATUS,
    NXT_TRADING,
    H,
    phase_at,
)
from simulator.spec import TrLayout, load_layouts
from simulator.symbols import (
    DEFAULT_OVERSEAS,
    DEFAULT_SYMBOLS,
    TRADE_NOTIONAL_MU,
    DomesticSymbol,
    KrxAuction,
    Venue,
)
from simulator.ticks import floor_to_tick, tick_down, tick_size, tick_up

__all__ = ["DEFAULT_OVERSEAS", "DEFAULT_SYMBOLS", "GenRecord", "Market", "MarketConfig"]

DIVERGENCE_TAU = 30.0  # seconds for the NXT-KRX divergence to decay
MIN_EVENT_DT = 0.001


class GenRecord(NamedTuple):
    """One generated record: `id` is unique per market and increasing in generation order."""

    id: int
    tr_id: str
    key: str
    fields: list[str]


_new_record = tuple.__new__
"""GenRecord without the Python-level __new__ of a NamedTuple (one per record)."""


@dataclass
class MarketConfig:
    seed: int = 1
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    overseas: tuple[str, ...] = DEFAULT_OVERSEAS
    rate: float = 2.0
    """Events per market second per domestic symbol (overseas: half)."""
    daily_vol: float = 0.04
    nxt_share: float = 0.3
    """Fraction of events on NXT while both venues trade."""
    program_share: float = 0.25
    vi_pct: float = 3.0
    """Move (in %) from the VI reference price that triggers a KRX volatility interruption."""
    vi_seconds: float = 120.0
    order_interval: float = 20.0
    """Mean market seconds between simulated own orders per execution-notice subscription."""


class Market:
    """Generates records; the server pulls them with `advance(t)` (or `burst` in load mode)."""

    def __init__(
        self,
        config: MarketConfig,
        *,
        date: dt.date,
        start: float,
        layouts: dict[str, TrLayout] | None = None,
    ) -> None:
        self.config = config
        self.layouts = layouts or load_layouts()
        self.date = date
        self.date_str = date.strftime("%Y%m%d")
        self.t = start
        self.wanted: set[tuple[str, str]] = set()
        self.symbols: dict[str, DomesticSymbol] = {}
        self.overseas: dict[str, OverseasSymbol] = {}
        self.desks: dict[tuple[str, str], OrderDesk] = {}
        self.krx_phase = phase_at(KRX_SCHEDULE, start)
        self.nxt_phase = phase_at(NXT_SCHEDULE, start)
        self.generated = 0
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self._next_id = 0
        self._out: list[GenRecord] = []
        self._rr = 0
        self._getters: dict[str, Callable[[dict[str, str]], Any]] = {}
        self._rows: dict[str, RowLayout] = {}
        for tr_id, layout in self.layouts.items():
            rows = (
                None if layout.venue == "OVERSEAS" else fields.row_layout(layout.kind, layout.names)
            )
            if rows is not None:
                self._rows[tr_id] = rows
        self._quote_memo: dict[tuple[str, str], Quote] = {}
        self._pending_extra: list[GenRecord] = []
        self._sigma = config.daily_vol / math.sqrt(6.5 * H)
        self._min_step = self._step_scales(MIN_EVENT_DT)
        for code in config.symbols:
            self.add_symbol(code)
        for rsym in config.overseas:
            self.add_overseas(rsym)

    # ---- universe -------------------------------------------------------------------------

    def add_symbol(self, code: str) -> DomesticSymbol:
        s = self.symbols.get(code)
        if s is None:
            s = DomesticSymbol(code, self.config.seed, self.t)
            self.symbols[code] = s
            if self.krx_phase == "auction_open":
                s.auction = KrxAuction("B")
            elif self.krx_phase == "auction_close":
                s.auction = KrxAuction("A", bid_ready=True, ask_ready=True)
            self._schedule(self.t + s.rng.expovariate(self.config.rate), partial(self._tick, s))
        return s

    def add_overseas(self, rsym: str) -> OverseasSymbol:
        o = self.overseas.get(rsym)
        if o is None:
            o = OverseasSymbol(rsym, self.config.seed, self.t, self.config.daily_vol)
            self.overseas[rsym] = o
            rate = self.config.rate / 2
            self._schedule(self.t + o.rng.expovariate(rate), partial(self._overseas_tick, o))
        return o

    def add_interest(self, tr_id: str, key: str) -> None:
        """Start formatting records of (tr_id, key); creates the symbol or desk on first use."""
        layout = self.layouts.get(tr_id)
        if layout is None:
            return
        self.wanted.add((tr_id, key))
        if layout.kind == "notice":
            if (tr_id, key) not in self.desks:
                desk = OrderDesk(tr_id, key, self.config.seed, overseas=layout.venue == "OVERSEAS")
                self.desks[(tr_id, key)] = desk
                self._schedule(
                    self.t + desk.rng.expovariate(1 / self.config.order_interval),
                    partial(self._desk_tick, desk),
                )
        elif layout.venue == "OVERSEAS":
            self.add_overseas(key)
        else:
            self.add_symbol(key)

    # ---- driving --------------------------------------------------------------------------

    def advance(self, t: float) -> list[GenRecord]:
        """Every record generated between the last call and market time `t`, in order."""
        out: list[GenRecord] = []
        self._out = out
        while True:
            nb = next((b for b in BOUNDARIES if b > self.t), math.inf)
            if nb <= t:
                self._run_until(nb, inclusive=False)
                self.t = nb
                self._transition(nb)
            else:
                self._run_until(t, inclusive=True)
                self.t = max(self.t, t)
                break
        self.generated += len(out)
        return out

    def burst(self, records: int, t: float, live: Container[tuple[str, str]]) -> list[GenRecord]:
        """Load mode: extra domestic events at time `t` until `records` live records exist.

        `live`: the (tr_id, key) pairs somebody receives now (a subset of `wanted`).
        """
        out: list[GenRecord] = []
        self._out = out
        syms = list(self.symbols.values())
        produced = 0
        budget = records * 4 + 100
        while produced < records and budget > 0 and syms:
            s = syms[self._rr % len(syms)]
            self._rr += 1
            budget -= 1
            before = len(out)
            self._domestic_event(s, max(t, s.last_t))
            for r in out[before:]:
                if (r.tr_id, r.key) in live:
                    produced += 1
        self.generated += len(out)
        return out

    def trigger_vi(self, code: str) -> bool:
        """Force a VI on a symbol now (fault/test hook); False if it cannot start now."""
        s = self.symbols.get(code)
        if s is None or s.auction is not None or self.krx_phase != "continuous":
            return False
        self._out = []
        self._start_vi(s, self.t)
        self._pending_extra = self._out
        return True

    def take_pending(self) -> list[GenRecord]:
        """Records generated outside `advance` (e.g. by `trigger_vi`)."""
        out, self._pending_extra = self._pending_extra, []
        self.generated += len(out)
        return out

    def quote(self, code: str) -> tuple[int, int]:
        """(best bid, best ask) of a domestic symbol on KRX (own orders price off it)."""
        s = self.add_symbol(code)
        return s.krx.book.best_bid, s.krx.book.best_ask

    def _schedule(self, t: float, fn: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn))

    def _run_until(self, limit: float, *, inclusive: bool) -> None:
        heap = self._heap
        while heap and (heap[0][0] < limit or (inclusive and heap[0][0] == limit)):
            te, _, fn = heapq.heappop(heap)
            self.t = max(self.t, te)
            fn(te)

    def _add(self, tr_id: str, key: str, values: list[str]) -> None:
        """A wanted domestic record, from its builder's values (fields.RowLayout)."""
        self._next_id += 1
        row = self._rows[tr_id].arrange(values)
        self._out.append(_new_record(GenRecord, (self._next_id, tr_id, key, row)))

    def _emit(self, tr_id: str, key: str, build: Callable[[], dict[str, str]]) -> None:
        if (tr_id, key) in self.wanted:
            values = build()
            getter = self._getters.get(tr_id)
            try:
                row = list(getter(values)) if getter is not None else None
            except KeyError:  # a builder that does not know every catalogue field
                row = None
            if row is None:
                names = self.layouts[tr_id].names
                row = [values.get(n, "") for n in names]
                if getter is None and values.keys() >= set(names):
                    self._getters[tr_id] = itemgetter(*names)
            self._next_id += 1
            self._out.append(GenRecord(self._next_id, tr_id, key, row))

    # ---- actors ---------------------------------------------------------------------------

    def _tick(self, s: DomesticSymbol, t: float) -> None:
        self._domestic_event(s, t)
        self._schedule(t + s.rng.expovariate(self.config.rate), partial(self._tick, s))

    def _overseas_tick(self, o: OverseasSymbol, t: float) -> None:
        for tr_id, build in o.event(t, self.date):
            self._emit(tr_id, o.rsym, build)
        self._schedule(t + o.rng.expovariate(self.config.rate / 2), partial(self._overseas_tick, o))

    def _desk_tick(self, desk: OrderDesk, t: float) -> None:
        if desk.overseas:
            prices = {r: (o.bid(), o.ask()) for r, o in self.overseas.items()}
        else:
            prices = {
                c: (s.krx.book.best_bid, s.krx.book.best_ask) for c, s in self.symbols.items()
            }
        names = {c: s.ref.name for c, s in self.symbols.items()}
        for build in desk.step(t, prices, names):
            self._emit(desk.tr_id, desk.key, build)
        self._schedule(
            t + desk.next_delay(self.config.order_interval), partial(self._desk_tick, desk)
        )

    # ---- domestic events ------------------------------------------------------------------

    def _step_scales(self, dt_: float) -> tuple[float, float, float]:
        """(fair value's sigma x sqrt(dt), divergence decay, divergence noise) over dt."""
        decay = math.exp(-dt_ / DIVERGENCE_TAU)
        return self._sigma * math.sqrt(dt_), decay, 1.2 * math.sqrt(1 - decay * decay)

    def _evolve(self, s: DomesticSymbol, t: float) -> None:
        dt_ = max(t - s.last_t, MIN_EVENT_DT)
        s.last_t = max(s.last_t, t)
        rng = s.rng
        # load mode's events are all MIN_EVENT_DT apart: their scales are computed once
        vol, decay, noise = self._min_step if dt_ == MIN_EVENT_DT else self._step_scales(dt_)
        s.fair *= math.exp(vol * rng.gauss(0.0, 1.0))
        s.fair = min(max(s.fair, s.ref.lower * 1.05), s.ref.upper * 0.95)
        s.div = s.div * decay + noise * rng.gauss(0.0, 1.0)

    def _domestic_event(self, s: DomesticSymbol, t: float) -> None:
        self._quote_memo.clear()
        self._evolve(s, t)
        u = s.rng.random()
        krx_active = s.auction is not None or self.krx_phase == "continuous"
        nxt_open = self.nxt_phase in NXT_TRADING
        nxt_active = nxt_open or 8 * H <= t < 20 * H
        if krx_active and (not nxt_active or u < 1 - self.config.nxt_share):
            if s.auction is not None:
                self._auction_event(s, t)
            else:
                self._venue_event(s, s.krx, t)
        elif nxt_open:
            self._venue_event(s, s.nxt, t)
        elif nxt_active:
            self._nxt_indicative(s, t)

    def _venue_event(self, s: DomesticSymbol, v: Venue, t: float) -> None:
        if s.rng.random() < 0.4:
            self._trade(s, v, t)
        else:
            self._requote(s, v, t)

    def _trade(self, s: DomesticSymbol, v: Venue, t: float) -> None:
        rng, book = s.rng, v.book
        mid = book.mid
        tick = tick_size(int(mid))
        p_buy = min(0.9, max(0.1, 0.5 + 0.2 * (s.target(v) - mid) / tick))
        buy = rng.random() < p_buy
        side_qty = book.ask_qty if buy else book.bid_qty
        qty = max(1, int(rng.lognormvariate(TRADE_NOTIONAL_MU, 1.0) / mid))
        if rng.random() < 0.02:
            qty += sum(side_qty[: rng.randint(1, 3)])
        qty = min(qty, sum(side_qty[:3]))
        is_program = rng.random() < self.config.program_share
        fills = book.take_asks(qty, v.depth) if buy else book.take_bids(qty, v.depth)
        side = "1" if buy else "5"
        for i, (px, q) in enumerate(fills):
            v.tape.apply(px, q, buy, t)
            s.un.apply(px, q, buy, t)
            if is_program:
                v.program.add(px, q, buy)
            nxt_px = fills[i + 1][0] if i + 1 < len(fills) else None
            self._emit_trade(
                s, v, t, px, q, side, nxt_px if buy else None, nxt_px if not buy else None
            )
        if is_program:
            v.program.sell_rest = max(0, v.program.sell_rest + rng.randint(-qty, qty))
            v.program.buy_rest = max(0, v.program.buy_rest + rng.randint(-qty, qty))
        self._emit_books(s, v, t)
        if is_program:
            self._emit_program(s, v, t)
        if v is s.krx and s.auction is None:
            last = v.tape.last
            if abs(last - s.vi_ref) * 100 >= self.config.vi_pct * s.vi_ref:
                self._start_vi(s, t)

    def _requote(self, s: DomesticSymbol, v: Venue, t: float) -> None:
        rng, book = s.rng, v.book
        mid = book.mid
        gap = (s.target(v) - mid) / tick_size(int(mid))
        u = rng.random()
        wide = book.up(book.bid_px[0]) < book.ask_px[0]
        if u < 0.3 and abs(gap) > 1.0 and book.bid_px[1] > 0:
            book.pull(ask=gap > 0, depth=v.depth)
        elif u < 0.7 and wide:
            if gap >= 0:
                book.improve_bid(v.depth(0))
            else:
                book.improve_ask(v.depth(0))
        else:
            level = min(LEVELS - 1, int(rng.expovariate(0.6)))
            book.requote(rng.random() < 0.5, level, int(v.depth(level) * (rng.random() - 0.45)))
        v.mid.rest = max(0, v.mid.rest + rng.randint(-40, 50))
        v.mid.side = "1" if rng.random() < 0.5 else "2"
        self._emit_books(s, v, t)

    # ---- auctions and VI ------------------------------------------------------------------

    def _auction_quote(self, s: DomesticSymbol) -> Quote:
        a = s.auction
        assert a is not None
        base = a.price or floor_to_tick(s.fair)
        zeros = [0] * LEVELS
        return Quote(
            ladder(tick_up(base), tick_up) if a.ask_ready else list(zeros),
            list(a.ask_qty) if a.ask_ready else list(zeros),
            ladder(base, tick_down) if a.bid_ready else list(zeros),
            list(a.bid_qty) if a.bid_ready else list(zeros),
        )

    def _auction_event(self, s: DomesticSymbol, t: float) -> None:
        a = s.auction
        assert a is not None
        rng, depth = s.rng, s.krx.depth
        if not a.ask_ready and rng.random() < 0.35:
            a.ask_ready = True
            a.ask_qty = [depth(i) // 2 + 1 for i in range(LEVELS)]
        if not a.bid_ready and rng.random() < 0.35:
            a.bid_ready = True
            a.bid_qty = [depth(i) // 2 + 1 for i in range(LEVELS)]
        level = min(LEVELS - 1, int(rng.expovariate(0.5)))
        qty = depth(level) // 3 + 1
        if rng.random() < 0.5:
            if a.ask_ready:
                a.ask_qty[level] += qty
        elif a.bid_ready:
            a.bid_qty[level] += qty
        if a.bid_ready and a.ask_ready:
            a.price = floor_to_tick(s.fair)
            a.qty += qty // 2 + 1
        self._emit_expected(s, t)
        self._emit_books(s, s.krx, t)

    def _start_vi(self, s: DomesticSymbol, t: float) -> None:
        last = s.krx.tape.last or s.ref.prev_close
        ends = t + self.config.vi_seconds
        s.auction = KrxAuction("C", price=last, bid_ready=True, ask_ready=True, ends=ends)
        s.auction.ask_qty = [s.krx.depth(i) // 2 + 1 for i in range(LEVELS)]
        s.auction.bid_qty = [s.krx.depth(i) // 2 + 1 for i in range(LEVELS)]
        self._emit_status(s, "KRX", t, vi="Y")
        self._schedule(ends, partial(self._end_vi, s))

    def _end_vi(self, s: DomesticSymbol, t: float) -> None:
        if s.auction is None or s.auction.kind != "C":
            return
        self._uncross(s, t, market_cls="2")
        self._emit_status(s, "KRX", t, vi="N")

    def _uncross(self, s: DomesticSymbol, t: float, *, market_cls: str) -> None:
        a = s.auction
        if a is None:
            return
        s.auction = None
        self._quote_memo.clear()
        price = a.price or floor_to_tick(s.fair)
        buy = sum(a.bid_qty) >= sum(a.ask_qty)
        # the residual book: a buy-side imbalance leaves asks at the auction price, and v.v.
        s.krx.book = Book.around(tick_down(price) if buy else price, s.krx.depth)
        s.vi_ref = price
        if a.qty > 0:
            s.krx.tape.apply(price, a.qty, buy, t)
            s.un.apply(price, a.qty, buy, t)
            self._emit_trade(s, s.krx, t, price, a.qty, "1" if buy else "5", None, None, market_cls)
        self._emit_books(s, s.krx, t)

    def _transition(self, tb: float) -> None:
        krx_new = phase_at(KRX_SCHEDULE, tb)
        nxt_new = phase_at(NXT_SCHEDULE, tb)
        krx_old, nxt_old = self.krx_phase, self.nxt_phase
        self.krx_phase, self.nxt_phase = krx_new, nxt_new
        for s in self.symbols.values():
            self._quote_memo.clear()
            if krx_new != krx_old:
                if krx_new == "auction_open":
                    s.auction = KrxAuction("B")
                elif krx_new == "continuous":
                    self._uncross(s, tb, market_cls="2")
                elif krx_new == "auction_close":
                    if s.auction is not None:
                        s.auction.kind, s.auction.ends = "A", None
                    else:
                        last = s.krx.tape.last or s.krx.book.best_bid
                        s.auction = KrxAuction("A", price=last, bid_ready=True, ask_ready=True)
                        s.auction.ask_qty = [s.krx.depth(i) // 2 + 1 for i in range(LEVELS)]
                        s.auction.bid_qty = [s.krx.depth(i) // 2 + 1 for i in range(LEVELS)]
                elif krx_new == "closed" and krx_old == "auction_close":
                    self._uncross(s, tb, market_cls="5")
                self._emit_status(s, "KRX", tb, vi="N")
            if nxt_new != nxt_old:
                self._emit_status(s, "NXT", tb, vi="N")

    # ---- emission -------------------------------------------------------------------------

    def _venue_quote(self, s: DomesticSymbol, v: Venue) -> Quote:
        """The venue's displayed book now (memoised until the next state change)."""
        memo_key = (v.name, s.ref.code)
        quote = self._quote_memo.get(memo_key)
        if quote is None:
            if v is s.krx and s.auction is not None:
                quote = self._auction_quote(s)
            else:
                quote = book_quote(v.book)
            self._quote_memo[memo_key] = quote
        return quote

    def _un_quote(self, s: DomesticSymbol) -> Quote:
        memo_key = ("UN", s.ref.code)
        quote = self._quote_memo.get(memo_key)
        if quote is None:
            quotes = []
            if self.krx_phase != "closed":
                quotes.append(self._venue_quote(s, s.krx))
            if self.nxt_phase in NXT_TRADING:
                quotes.append(self._venue_quote(s, s.nxt))
            quote = merge_quotes(quotes) if quotes else self._venue_quote(s, s.krx)
            self._quote_memo[memo_key] = quote
        return quote

    def _market_cls(self, v: Venue) -> str:
        return "2" if v.name == "KRX" else NXT_MARKET_CLS.get(self.nxt_phase, "2")

    def _emit_trade(
        self,
        s: DomesticSymbol,
        v: Venue,
        t: float,
        price: int,
        qty: int,
        side: str,
        ask_after: int | None,
        bid_after: int | None,
        market_cls: str | None = None,
    ) -> None:
        """A fill on a venue and on the unified tape; ask/bid_after: the best price it left."""
        code = s.ref.code
        tr_id = "H0STCNT0" if v.name == "KRX" else "H0NXCNT0"
        mcls = market_cls or self._market_cls(v)
        for target, tape, wanted in (
            (tr_id, v.tape, (tr_id, code) in self.wanted),
            ("H0UNCNT0", s.un, ("H0UNCNT0", code) in self.wanted),
        ):
            if not wanted:
                continue
            quote = self._venue_quote(s, v) if tape is v.tape else self._un_quote(s)
            self._add(target, code, fields.trade_row(
                s.ref, tape, t, self.date_str, price=price, qty=qty, side=side, quote=quote,
                ask1=quote.ask_px[0] if ask_after is None else ask_after,
                bid1=quote.bid_px[0] if bid_after is None else bid_after,
                hour_cls="0", vi_ref=s.vi_ref, market_cls=mcls,
            ))  # fmt: skip

    def _emit_books(self, s: DomesticSymbol, v: Venue, t: float) -> None:
        code = s.ref.code
        is_krx = v.name == "KRX"
        a = s.auction if is_krx else None
        auction = Auction(a.price, a.qty) if a is not None and a.bid_ready and a.ask_ready else None
        hour_cls = a.kind if a is not None else "0"
        kbook, nbook = s.krx.book, s.nxt.book
        s.krx.mid.price = (kbook.bid_px[0] + kbook.ask_px[0]) // 2
        s.nxt.mid.price = (nbook.bid_px[0] + nbook.ask_px[0]) // 2
        tr_id = "H0STASP0" if is_krx else "H0NXASP0"
        if (tr_id, code) in self.wanted:
            quote = self._venue_quote(s, v)
            prev, v.last_totals = v.last_totals, (quote.total_ask, quote.total_bid)
            self._add(tr_id, code, fields.book_row(
                s.ref, t, quote, hour_cls=hour_cls, acml_vol=v.tape.volume, prev_totals=prev,
                auction=auction, kmid=s.krx.mid, nmid=s.nxt.mid, market_cls=self._market_cls(v),
            ))  # fmt: skip
        if ("H0UNASP0", code) in self.wanted:
            uq = self._un_quote(s)
            un_prev, s.krx.un_last_totals = s.krx.un_last_totals, (uq.total_ask, uq.total_bid)
            self._add("H0UNASP0", code, fields.book_row(
                s.ref, t, uq, hour_cls=hour_cls, acml_vol=s.un.volume, prev_totals=un_prev,
                auction=auction, kmid=s.krx.mid, nmid=s.nxt.mid, market_cls="2",
            ))  # fmt: skip

    def _emit_expected(self, s: DomesticSymbol, t: float) -> None:
        a = s.auction
        assert a is not None
        code = s.ref.code
        price = a.price if a.bid_ready and a.ask_ready else 0
        for tr_id, tape in (("H0STANC0", s.krx.tape), ("H0UNANC0", s.un)):
            if (tr_id, code) in self.wanted:
                quote = self._auction_quote(s)
                self._add(tr_id, code, fields.trade_row(
                    s.ref, tape, t, self.date_str, price=price, qty=a.qty, side="", quote=quote,
                    ask1=quote.ask_px[0], bid1=quote.bid_px[0], hour_cls=a.kind,
                    vi_ref=s.vi_ref, market_cls="1",
                ))  # fmt: skip

    def _nxt_indicative(self, s: DomesticSymbol, t: float) -> None:
        """NXT between its sessions: indicative (expected) price records, no trading."""
        code = s.ref.code
        if ("H0NXANC0", code) not in self.wanted:
            return
        book = s.nxt.book
        quote = book_quote(book)
        self._add("H0NXANC0", code, fields.trade_row(
            s.ref, s.nxt.tape, t, self.date_str, price=book.best_bid, qty=0, side="",
            quote=quote, ask1=quote.ask_px[0], bid1=quote.bid_px[0], hour_cls="B",
            vi_ref=s.vi_ref, market_cls="1",
        ))  # fmt: skip

    def _emit_program(self, s: DomesticSymbol, v: Venue, t: float) -> None:
        code = s.ref.code
        tr_id = "H0STPGM0" if v.name == "KRX" else "H0NXPGM0"
        if (tr_id, code) in self.wanted:
            self._add(tr_id, code, fields.program(s.ref, t, v.program))
        if ("H0UNPGM0", code) in self.wanted:
            both = s.krx.program.plus(s.nxt.program)
            self._add("H0UNPGM0", code, fields.program(s.ref, t, both))

    def _emit_status(self, s: DomesticSymbol, venue: str, t: float, *, vi: str) -> None:
        if venue == "KRX":
            tr_id, exchange = "H0STMKO0", "K"
            mkop, antc = KRX_STATUS[self.krx_phase]
            if s.auction is not None and s.auction.kind == "C":
                mkop = "112"
        else:
            tr_id, exchange = "H0NXMKO0", "N"
            mkop, antc = NXT_STATUS[self.nxt_phase]
        if (tr_id, s.ref.code) in self.wanted:
            self._add(tr_id, s.ref.code, fields.status(
                s.ref, mkop=mkop, antc_mkop=antc, vi=vi, exchange=exchange
            ))  # fmt: skip
