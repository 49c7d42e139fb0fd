"""Domestic record contents: market state -> {KIS field name: wire string}.

Values are built by name and laid out in catalogue order by the caller, so a TR that gains a
field in the catalogue gets it (empty) without touching this module. Formatting follows
what real frames show: whole KRW prices, signed differences ("-300"), two-decimal rates.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def pct(num: float, den: float) -> str:
    return f"{num * 100 / den:.2f}" if den else "0.00"


def _prev_same_time(ref: Reference, t: float) -> int:
    frac = min(1.0, max(0.0, (t - 9 * 3600) / REGULAR_DAY_SECONDS))
    return int(ref.prev_volume * frac)


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
)  # fmt: skip
"""The trade/expected layout this module knows, in KIS order (the side code is named
CCLD_DVSN on H0STCNT0 and CNTG_CLS_CODE elsewhere, at the same position)."""
_SIDE_AT = TRADE_FIELDS.index("CNTG_CLS_CODE")
_fast_trade: dict[int, tuple[tuple[str, ...], bool]] = {}


def _trade_layout_is_known(names: tuple[str, ...]) -> bool:
    head = names[: len(TRADE_FIELDS)]
    if len(head) > _SIDE_AT and head[_SIDE_AT] == "CCLD_DVSN":
        head = (*head[:_SIDE_AT], "CNTG_CLS_CODE", *head[_SIDE_AT + 1 :])
    return head == TRADE_FIELDS[: len(head)]


def trade_row(
    names: tuple[str, ...],
    ref: Reference,
    tape: Tape,
    t: float,
    date: str,
    *,
    price: int,
    qty: int,
    side: str,
    quote: Quote,
    hour_cls: str,
    vi_ref: int,
    market_cls: str,
) -> list[str]:
    """A trade (…CNT0) or expected-price (…ANC0) record in `names` order (one shared layout)."""
    i2s = INT_STR
    diff = price - ref.prev_close
    vol = tape.volume
    prev_same = _prev_same_time(ref, t)
    open_, high, low = tape.open, tape.high, tape.low
    if vol:
        since_open = [hhmmss(tape.open_t), sign_code(price - open_), str(price - open_),
                      hhmmss(tape.high_t), sign_code(price - high), str(price - high),
                      hhmmss(tape.low_t), sign_code(price - low), str(price - low)]  # fmt: skip
    else:
        since_open = ["", "3", "0", "", "3", "0", "", "3", "0"]
    values = [
        ref.code, hhmmss(t), i2s[price], sign_code(diff, price, ref.upper, ref.lower), str(diff),
        pct(diff, ref.prev_close), f"{tape.amount / vol:.2f}" if vol else "0.00",
        i2s[open_], i2s[high], i2s[low], i2s[quote.ask_px[0]], i2s[quote.bid_px[0]], i2s[qty],
        str(vol), str(tape.amount), str(tape.sell_count), str(tape.buy_count),
        str(tape.buy_count - tape.sell_count), pct(tape.buy_qty, tape.sell_qty),
        str(tape.sell_qty), str(tape.buy_qty), side,
        pct(tape.buy_qty, tape.buy_qty + tape.sell_qty), pct(vol, ref.prev_volume),
        *since_open,
        date, "20" if hour_cls == "0" else "10", "N", i2s[quote.ask_qty[0]],
        i2s[quote.bid_qty[0]], str(sum(quote.ask_qty)), str(sum(quote.bid_qty)),
        f"{vol * 100 / ref.shares:.2f}", str(prev_same), pct(vol, prev_same), hour_cls, "",
        i2s[vi_ref],
    ]  # fmt: skip
    known = _fast_trade.get(id(names))  # by identity: hashing a 47-tuple per record is costly
    if known is None or known[0] is not names:
        known = _fast_trade[id(names)] = (names, _trade_layout_is_known(names))
    fast = known[1]
    n = len(names)
    if fast:
        if n <= len(values):
            return values[:n]
        extra = {"MARKET_CLS_CODE": market_cls}
        return values + [extra.get(name, "") for name in names[len(values) :]]
    by_name = dict(zip(TRADE_FIELDS, values, strict=True))
    by_name["CCLD_DVSN"] = side
    by_name["MARKET_CLS_CODE"] = market_cls
    return [by_name.get(name, "") for name in names]


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


_BOOK_CONSTANTS = {
    "OVTM_TOTAL_ASKP_RSQN": "0",
    "OVTM_TOTAL_BIDP_RSQN": "0",
    "OVTM_TOTAL_ASKP_ICDC": "0",
    "OVTM_TOTAL_BIDP_ICDC": "0",
    "STCK_DEAL_CLS_CODE": "0",
    "ANTC_CNPR": "0",
    "ANTC_CNQN": "0",
    "ANTC_VOL": "0",
    "ANTC_CNTG_VRSS": "0",
    "ANTC_CNTG_VRSS_SIGN": "3",
    "ANTC_CNTG_PRDY_CTRT": "0.00",
}


def book(
    ref: Reference,
    t: float,
    quote: Quote,
    *,
    hour_cls: str,
    acml_vol: int,
    prev_totals: tuple[int, int],
    auction: Auction | None,
    kmid: Midpoint | None,
    nmid: Midpoint | None,
    market_cls: str,
) -> dict[str, str]:
    """A 10-level book record (…ASP0)."""
    total_ask, total_bid = sum(quote.ask_qty), sum(quote.bid_qty)
    rec = _BOOK_CONSTANTS.copy()
    rec["MKSC_SHRN_ISCD"] = ref.code
    rec["BSOP_HOUR"] = hhmmss(t)
    rec["HOUR_CLS_CODE"] = hour_cls
    rec["TOTAL_ASKP_RSQN"] = str(total_ask)
    rec["TOTAL_BIDP_RSQN"] = str(total_bid)
    rec["ACML_VOL"] = str(acml_vol)
    rec["TOTAL_ASKP_RSQN_ICDC"] = str(total_ask - prev_totals[0])
    rec["TOTAL_BIDP_RSQN_ICDC"] = str(total_bid - prev_totals[1])
    rec["MARKET_CLS_CODE"] = market_cls
    rec.update(zip(ASK_PX, map(str, quote.ask_px), strict=True))
    rec.update(zip(BID_PX, map(str, quote.bid_px), strict=True))
    rec.update(zip(ASK_QTY, map(str, quote.ask_qty), strict=True))
    rec.update(zip(BID_QTY, map(str, quote.bid_qty), strict=True))
    if auction is not None and auction.price:
        diff = auction.price - ref.prev_close
        rec["ANTC_CNPR"] = str(auction.price)
        rec["ANTC_CNQN"] = str(auction.qty)
        rec["ANTC_VOL"] = str(auction.qty)
        rec["ANTC_CNTG_VRSS"] = str(diff)
        rec["ANTC_CNTG_VRSS_SIGN"] = sign_code(diff, auction.price, ref.upper, ref.lower)
        rec["ANTC_CNTG_PRDY_CTRT"] = pct(diff, ref.prev_close)
    for prefix, mid in (("KMID", kmid), ("NMID", nmid)):
        if mid is not None:
            rec[f"{prefix}_PRC"] = str(mid.price)
            rec[f"{prefix}_TOTAL_RSQN"] = str(mid.rest)
            rec[f"{prefix}_CLS_CODE"] = mid.side
    return rec


BOOK_HEAD = (
    "MKSC_SHRN_ISCD",
    "BSOP_HOUR",
    "HOUR_CLS_CODE",
    *ASK_PX,
    *BID_PX,
    *ASK_QTY,
    *BID_QTY,
    "TOTAL_ASKP_RSQN",
    "TOTAL_BIDP_RSQN",
    "OVTM_TOTAL_ASKP_RSQN",
    "OVTM_TOTAL_BIDP_RSQN",
    "ANTC_CNPR",
    "ANTC_CNQN",
    "ANTC_VOL",
    "ANTC_CNTG_VRSS",
    "ANTC_CNTG_VRSS_SIGN",
    "ANTC_CNTG_PRDY_CTRT",
    "ACML_VOL",
    "TOTAL_ASKP_RSQN_ICDC",
    "TOTAL_BIDP_RSQN_ICDC",
    "OVTM_TOTAL_ASKP_ICDC",
    "OVTM_TOTAL_BIDP_ICDC",
    "STCK_DEAL_CLS_CODE",
)
"""The classic 59-field book layout; a catalogue that starts with it gets the fast path."""
_fast_book: dict[int, tuple[tuple[str, ...], bool, tuple[str, ...]]] = {}
_NO_AUCTION = ("0", "0", "0", "0", "3", "0.00")


def book_row(
    names: tuple[str, ...],
    ref: Reference,
    t: float,
    quote: Quote,
    *,
    hour_cls: str,
    acml_vol: int,
    prev_totals: tuple[int, int],
    auction: Auction | None,
    kmid: Midpoint | None,
    nmid: Midpoint | None,
    market_cls: str,
) -> list[str]:
    """A book record laid out in `names` order (the hottest record: built as a list)."""
    known = _fast_book.get(id(names))
    if known is None or known[0] is not names:
        fast = names[: len(BOOK_HEAD)] == BOOK_HEAD
        known = _fast_book[id(names)] = (names, fast, names[len(BOOK_HEAD) :])
    if not known[1]:
        rec = book(ref, t, quote, hour_cls=hour_cls, acml_vol=acml_vol, prev_totals=prev_totals,
                   auction=auction, kmid=kmid, nmid=nmid, market_cls=market_cls)  # fmt: skip
        return [rec.get(n, "") for n in names]
    total_ask, total_bid = sum(quote.ask_qty), sum(quote.bid_qty)
    i2s = INT_STR.__getitem__
    row = [ref.code, hhmmss(t), hour_cls]
    row += map(i2s, quote.ask_px)
    row += map(i2s, quote.bid_px)
    row += map(i2s, quote.ask_qty)
    row += map(i2s, quote.bid_qty)
    row += (str(total_ask), str(total_bid), "0", "0")
    if auction is not None and auction.price:
        diff = auction.price - ref.prev_close
        qty = str(auction.qty)
        sign = sign_code(diff, auction.price, ref.upper, ref.lower)
        row += (str(auction.price), qty, qty, str(diff), sign, pct(diff, ref.prev_close))
    else:
        row += _NO_AUCTION
    row += (str(acml_vol), str(total_ask - prev_totals[0]), str(total_bid - prev_totals[1]),
            "0", "0", "0")  # fmt: skip
    tail_names = known[2]
    if tail_names:
        tail = {"MARKET_CLS_CODE": market_cls}
        if kmid is not None:
            tail["KMID_PRC"] = i2s(kmid.price)
            tail["KMID_TOTAL_RSQN"] = i2s(kmid.rest)
            tail["KMID_CLS_CODE"] = kmid.side
        if nmid is not None:
            tail["NMID_PRC"] = i2s(nmid.price)
            tail["NMID_TOTAL_RSQN"] = i2s(nmid.rest)
            tail["NMID_CLS_CODE"] = nmid.side
        row += [tail.get(n, "") for n in tail_names]
    return row


def program(ref: Reference, t: float, flow: ProgramFlow) -> dict[str, str]:
    """A program-trading record (…PGM0): cumulative for the day."""
    return {
        "MKSC_SHRN_ISCD": ref.code,
        "STCK_CNTG_HOUR": hhmmss(t),
        "SELN_CNQN": str(flow.sell_qty),
        "SELN_TR_PBMN": str(flow.sell_amount),
        "SHNU_CNQN": str(flow.buy_qty),
        "SHNU_TR_PBMN": str(flow.buy_amount),
        "NTBY_CNQN": str(flow.buy_qty - flow.sell_qty),
        "NTBY_TR_PBMN": str(flow.buy_amount - flow.sell_amount),
        "SELN_RSQN": str(flow.sell_rest),
        "SHNU_RSQN": str(flow.buy_rest),
        "WHOL_NTBY_QTY": str(flow.buy_rest - flow.sell_rest),
    }


def status(
    ref: Reference, *, mkop: str, antc_mkop: str, vi: str, exchange: str, halted: bool = False
) -> dict[str, str]:
    """A market-operation record (…MKO0). Codes follow captured frames where known."""
    return {
        "MKSC_SHRN_ISCD": ref.code,
        "TRHT_YN": "Y" if halted else "N",
        "TR_SUSP_REAS_CNTT": "(null)",
        "MKOP_CLS_CODE": mkop,
        "ANTC_MKOP_CLS_CODE": antc_mkop,
        "MRKT_TRTM_CLS_CODE": "",
        "DIVI_APP_CLS_CODE": "",
        "ISCD_STAT_CLS_CODE": "55",
        "VI_CLS_CODE": vi,
        "OVTM_VI_CLS_CODE": "N",
        "EXCH_CLS_CODE": exchange,
    }
