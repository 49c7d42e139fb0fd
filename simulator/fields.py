"""Domestic record contents: market state -> the wire strings of one record.

Each builder returns its values in the field order it knows (TRADE_FIELDS, BOOK_FIELDS,
PROGRAM_FIELDS, STATUS_FIELDS); a `RowLayout` maps that order onto a TR's catalogue order,
so a TR that gains or reorders fields in the catalogue gets them (unknown ones empty) without
touching this module, and the usual case, a catalogue that starts with the known order, costs
at most a slice. Records are built as lists: this is the simulator's hottest code. Formatting
follows what real frames show: whole KRW prices, signed differences ("-300"), two-decimal
rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from simulator.book import LEVELS
from simulator.clock import hhmmss
from simulator.quotes import Quote
from simulator.tape import ProgramFlow, Tape

ASK_PX = tuple(f"ASKP{i}" for i in range(1, LEVELS + 1))
BID_PX = tuple(f"BIDP{i}" for i in range(1, LEVELS + 1))
ASK_QTY = tuple(f"ASKP_RSQN{i}" for i in range(1, LEVELS + 1))
BID_QTY = tuple(f"BIDP_RSQN{i}" for i in range(1, LEVELS + 1))

REGULAR_DAY_SECONDS = 6.5 * 3600


@dataclass(slots=True)
class Reference:
    """Per-symbol constants of the day."""

    code: str
    name: str
    prev_close: int
    upper: int
    lower: int
    shares: int
    prev_volume: int
    _versus_prev: dict[int, tuple[str, str, str, str]] = field(default_factory=dict, repr=False)

    def versus_prev(self, price: int) -> tuple[str, str, str, str]:
        """(price, PRDY_VRSS_SIGN, PRDY_VRSS, PRDY_CTRT) of a price (memoised: prices repeat)."""
        known = self._versus_prev.get(price)
        if known is None:
            if len(self._versus_prev) > 10_000:
                self._versus_prev.clear()
            diff = price - self.prev_close
            sign = sign_code(diff, price, self.upper, self.lower)
            known = (str(price), sign, str(diff), pct(diff, self.prev_close))
            self._versus_prev[price] = known
        return known


def sign_code(diff: int, price: int = 0, upper: int = 0, lower: int = 0) -> str:
    """PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down."""
    if upper and price >= upper:
        return "1"
    if lower and 0 < price <= lower:
        return "4"
    return "2" if diff > 0 else "3" if diff == 0 else "5"


class _IntStr(dict[int, str]):
    """int -> str with memory: prices and level sizes repeat endlessly in a market."""

    def __missing__(self, key: int) -> str:
        if len(self) > 100_000:
            self.clear()
        text = self[key] = str(key)
        return text


INT_STR = _IntStr()


class _SignedDiff(dict[int, tuple[str, str]]):
    """difference -> (sign code, text): the OPRC/HGPR/LWPR_VRSS_PRPR pairs of trade records."""

    def __missing__(self, diff: int) -> tuple[str, str]:
        if len(self) > 100_000:
            self.clear()
        pair = self[diff] = (sign_code(diff), str(diff))
        return pair


SIGNED_DIFF = _SignedDiff()


def pct(num: float, den: float) -> str:
    return f"{num * 100 / den:.2f}" if den else "0.00"


class RowLayout:
    """A builder's known field order laid out in a TR's catalogue order.

    `aliases` names catalogue fields that carry a known field under another name. Fields the
    builder does not know come out empty.
    """

    __slots__ = ("_pick", "_width")

    def __init__(
        self, known: tuple[str, ...], names: tuple[str, ...], aliases: Mapping[str, str] = {}
    ) -> None:
        index = {name: i for i, name in enumerate(known)}
        picks = [index.get(aliases.get(name, name), len(known)) for name in names]
        self._width = len(names)
        self._pick: itemgetter[Any] | None = None
        if picks != list(range(len(names))):
            self._pick = itemgetter(*picks, len(known))  # one more: never a bare item

    def arrange(self, values: list[str]) -> list[str]:
        """`values` (in the known order; may be reused) -> the record in catalogue order."""
        if self._pick is None:
            return values if len(values) == self._width else values[: self._width]
        values.append("")  # the slot of every field the builder does not know
        row = list(self._pick(values))
        row.pop()
        return row


TRADE_FIELDS = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL",
    "ACML_VOL", "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR",
    "SELN_CNTG_SMTN", "SHNU_CNTG_SMTN", "CNTG_CLS_CODE", "SHNU_RATE",
    "PRDY_VOL_VRSS_ACML_VOL_RATE", "OPRC_HOUR", "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR",
    "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN", "HGPR_VRSS_PRPR", "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN",
    "LWPR_VRSS_PRPR", "BSOP_DATE", "NEW_MKOP_CLS_CODE", "TRHT_YN", "ASKP_RSQN1", "BIDP_RSQN1",
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL",
    "PRDY_SMNS_HOUR_ACML_VOL_RATE", "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE", "VI_STND_PRC",
    "MARKET_CLS_CODE",
)  # fmt: skip
"""The trade/expected layout (…CNT0, …ANC0) in KIS order."""
TRADE_ALIASES = {"CCLD_DVSN": "CNTG_CLS_CODE"}
"""The side code is named CCLD_DVSN on H0STCNT0, at the same position."""
_NO_TRADE_YET = ("", "3", "0", "", "3", "0", "", "3", "0")


def trade_row(
    ref: Reference,
    tape: Tape,
    t: float,
    date: str,
    *,
    price: int,
    qty: int,
    side: str,
    quote: Quote,
    ask1: int,
    bid1: int,
    hour_cls: str,
    vi_ref: int,
    market_cls: str,
) -> list[str]:
    """A trade or expected-price record (TRADE_FIELDS order); ask1/bid1 as just after it."""
    i2s = INT_STR
    vol = tape.volume
    px, sign, diff, rate = ref.versus_prev(price)
    frac = (t - 9 * 3600) / REGULAR_DAY_SECONDS
    prev_same = int(ref.prev_volume * (0.0 if frac < 0.0 else 1.0 if frac > 1.0 else frac))
    buy_qty, sell_qty = tape.buy_qty, tape.sell_qty
    if vol:
        since_open = (hhmmss(tape.open_t), *SIGNED_DIFF[price - tape.open],
                      hhmmss(tape.high_t), *SIGNED_DIFF[price - tape.high],
                      hhmmss(tape.low_t), *SIGNED_DIFF[price - tape.low])  # fmt: skip
    else:
        since_open = _NO_TRADE_YET
    return [
        ref.code, hhmmss(t), px, sign, diff, rate,
        f"{tape.amount / vol:.2f}" if vol else "0.00",
        i2s[tape.open], i2s[tape.high], i2s[tape.low], i2s[ask1], i2s[bid1], i2s[qty],
        str(vol), str(tape.amount), str(tape.sell_count), str(tape.buy_count),
        str(tape.buy_count - tape.sell_count),
        f"{buy_qty * 100 / sell_qty:.2f}" if sell_qty else "0.00",  # pct(), inlined: hot
        str(sell_qty), str(buy_qty), side,
        f"{buy_qty * 100 / vol:.2f}" if vol else "0.00",  # buy_qty + sell_qty == vol
        pct(vol, ref.prev_volume),
        *since_open,
        date, "20" if hour_cls == "0" else "10", "N", i2s[quote.ask_qty[0]],
        i2s[quote.bid_qty[0]], str(quote.total_ask), str(quote.total_bid),
        f"{vol * 100 / ref.shares:.2f}", str(prev_same), pct(vol, prev_same), hour_cls, "",
        i2s[vi_ref], market_cls,
    ]  # fmt: skip


@dataclass(slots=True)
class Auction:
    """Indicative auction state shown in book records (ANTC_*)."""

    price: int = 0
    qty: int = 0


@dataclass(slots=True)
class Midpoint:
    """Resting mid-point orders of a venue (the KMID_/NMID_ tail of the book TRs)."""

    price: int = 0
    rest: int = 0
    side: str = "0"


BOOK_FIELDS = (
    "MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE", *ASK_PX, *BID_PX, *ASK_QTY, *BID_QTY,
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "OVTM_TOTAL_ASKP_RSQN", "OVTM_TOTAL_BIDP_RSQN",
    "ANTC_CNPR", "ANTC_CNQN", "ANTC_VOL", "ANTC_CNTG_VRSS", "ANTC_CNTG_VRSS_SIGN",
    "ANTC_CNTG_PRDY_CTRT", "ACML_VOL", "TOTAL_ASKP_RSQN_ICDC", "TOTAL_BIDP_RSQN_ICDC",
    "OVTM_TOTAL_ASKP_ICDC", "OVTM_TOTAL_BIDP_ICDC", "STCK_DEAL_CLS_CODE",
    "KMID_PRC", "KMID_TOTAL_RSQN", "KMID_CLS_CODE", "NMID_PRC", "NMID_TOTAL_RSQN",
    "NMID_CLS_CODE", "MARKET_CLS_CODE",
)  # fmt: skip
"""The 10-level book layout (…ASP0): the classic 59 fields, then the newer tail."""
_NO_AUCTION = ("0", "0", "0", "0", "3", "0.00")


def book_row(
    ref: Reference,
    t: float,
    quote: Quote,
    *,
    hour_cls: str,
    acml_vol: int,
    prev_totals: tuple[int, int],
    auction: Auction | None,
    kmid: Midpoint,
    nmid: Midpoint,
    market_cls: str,
) -> list[str]:
    """A book record (BOOK_FIELDS order); the hottest record of all."""
    i2s = INT_STR.__getitem__
    total_ask, total_bid = quote.total_ask, quote.total_bid
    if auction is not None and auction.price:
        px, sign, diff, rate = ref.versus_prev(auction.price)
        qty = str(auction.qty)
        antc: tuple[str, ...] = (px, qty, qty, diff, sign, rate)
    else:
        antc = _NO_AUCTION
    return [
        ref.code, hhmmss(t), hour_cls, *map(i2s, quote.ask_px), *map(i2s, quote.bid_px),
        *map(i2s, quote.ask_qty), *map(i2s, quote.bid_qty),
        str(total_ask), str(total_bid), "0", "0", *antc,
        str(acml_vol), str(total_ask - prev_totals[0]), str(total_bid - prev_totals[1]),
        "0", "0", "0",
        i2s(kmid.price), i2s(kmid.rest), kmid.side, i2s(nmid.price), i2s(nmid.rest), nmid.side,
        market_cls,
    ]  # fmt: skip


PROGRAM_FIELDS = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "SELN_CNQN", "SELN_TR_PBMN", "SHNU_CNQN",
    "SHNU_TR_PBMN", "NTBY_CNQN", "NTBY_TR_PBMN", "SELN_RSQN", "SHNU_RSQN", "WHOL_NTBY_QTY",
)  # fmt: skip


def program(ref: Reference, t: float, flow: ProgramFlow) -> list[str]:
    """A program-trading record (PROGRAM_FIELDS order): cumulative for the day."""
    return [
        ref.code, hhmmss(t), str(flow.sell_qty), str(flow.sell_amount), str(flow.buy_qty),
        str(flow.buy_amount), str(flow.buy_qty - flow.sell_qty),
        str(flow.buy_amount - flow.sell_amount), str(flow.sell_rest), str(flow.buy_rest),
        str(flow.buy_rest - flow.sell_rest),
    ]  # fmt: skip


STATUS_FIELDS = (
    "MKSC_SHRN_ISCD", "TRHT_YN", "TR_SUSP_REAS_CNTT", "MKOP_CLS_CODE", "ANTC_MKOP_CLS_CODE",
    "MRKT_TRTM_CLS_CODE", "DIVI_APP_CLS_CODE", "ISCD_STAT_CLS_CODE", "VI_CLS_CODE",
    "OVTM_VI_CLS_CODE", "EXCH_CLS_CODE",
)  # fmt: skip


def status(
    ref: Reference, *, mkop: str, antc_mkop: str, vi: str, exchange: str, halted: bool = False
) -> list[str]:
    """A market-operation record (STATUS_FIELDS order). Codes follow captured frames."""
    halt = "Y" if halted else "N"
    return [ref.code, halt, "(null)", mkop, antc_mkop, "", "", "55", vi, "N", exchange]


KNOWN_ORDERS: dict[str, tuple[tuple[str, ...], Mapping[str, str]]] = {
    "trade": (TRADE_FIELDS, TRADE_ALIASES),
    "expected": (TRADE_FIELDS, TRADE_ALIASES),
    "book": (BOOK_FIELDS, {}),
    "program": (PROGRAM_FIELDS, {}),
    "market_status": (STATUS_FIELDS, {}),
}
"""Catalogue kind of a domestic TR -> the order its builder knows."""


def row_layout(kind: str, names: tuple[str, ...]) -> RowLayout | None:
    """How a domestic TR of this kind is laid out, or None if no builder here makes it."""
    known = KNOWN_ORDERS.get(kind)
    return RowLayout(known[0], names, known[1]) if known is not None else None
