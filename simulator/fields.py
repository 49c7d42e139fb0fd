"""Domestic record contents: market state -> {KIS field name: wire string}.

Values are built by name and laid out in catalogue order by the caller, so a TR that gains a
field in the catalogue gets it (empty) without touching this module. Formatting follows
what real frames show: whole KRW prices, signed differences ("-300"), two-decimal rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.book import LEVELS
from simulator.clock import hhmmss
from simulator.tape import ProgramFlow, Tape

ASK_PX = tuple(f"ASKP{i}" for i in range(1, LEVELS + 1))
BID_PX = tuple(f"BIDP{i}" for i in range(1, LEVELS + 1))
ASK_QTY = tuple(f"ASKP_RSQN{i}" for i in range(1, LEVELS + 1))
BID_QTY = tuple(f"BIDP_RSQN{i}" for i in range(1, LEVELS + 1))

REGULAR_DAY_SECONDS = 6.5 * 3600


@dataclass(slots=True)
class Quote:
    """A venue's displayed book: 10 levels a side; price 0 marks an empty level."""

    ask_px: list[int]
    ask_qty: list[int]
    bid_px: list[int]
    bid_qty: list[int]

    @property
    def ask1(self) -> int:
        return self.ask_px[0]

    @property
    def bid1(self) -> int:
        return self.bid_px[0]


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


def pct(num: float, den: float) -> str:
    return f"{num * 100 / den:.2f}" if den else "0.00"


def _prev_same_time(ref: Reference, t: float) -> int:
    frac = min(1.0, max(0.0, (t - 9 * 3600) / REGULAR_DAY_SECONDS))
    return int(ref.prev_volume * frac)


def trade_like(
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
) -> dict[str, str]:
    """A trade (…CNT0) or expected-price (…ANC0) record; they share one layout."""
    diff = price - ref.prev_close
    vol = tape.volume
    prev_same = _prev_same_time(ref, t)
    open_, high, low = tape.open, tape.high, tape.low
    return {
        "MKSC_SHRN_ISCD": ref.code,
        "STCK_CNTG_HOUR": hhmmss(t),
        "STCK_PRPR": str(price),
        "PRDY_VRSS_SIGN": sign_code(diff, price, ref.upper, ref.lower),
        "PRDY_VRSS": str(diff),
        "PRDY_CTRT": pct(diff, ref.prev_close),
        "WGHN_AVRG_STCK_PRC": f"{tape.amount / vol:.2f}" if vol else "0.00",
        "STCK_OPRC": str(open_),
        "STCK_HGPR": str(high),
        "STCK_LWPR": str(low),
        "ASKP1": str(quote.ask1),
        "BIDP1": str(quote.bid1),
        "CNTG_VOL": str(qty),
        "ACML_VOL": str(vol),
        "ACML_TR_PBMN": str(tape.amount),
        "SELN_CNTG_CSNU": str(tape.sell_count),
        "SHNU_CNTG_CSNU": str(tape.buy_count),
        "NTBY_CNTG_CSNU": str(tape.buy_count - tape.sell_count),
        "CTTR": pct(tape.buy_qty, tape.sell_qty),
        "SELN_CNTG_SMTN": str(tape.sell_qty),
        "SHNU_CNTG_SMTN": str(tape.buy_qty),
        "CCLD_DVSN": side,
        "CNTG_CLS_CODE": side,
        "SHNU_RATE": pct(tape.buy_qty, tape.buy_qty + tape.sell_qty),
        "PRDY_VOL_VRSS_ACML_VOL_RATE": pct(vol, ref.prev_volume),
        "OPRC_HOUR": hhmmss(tape.open_t) if vol else "",
        "OPRC_VRSS_PRPR_SIGN": sign_code(price - open_) if vol else "3",
        "OPRC_VRSS_PRPR": str(price - open_) if vol else "0",
        "HGPR_HOUR": hhmmss(tape.high_t) if vol else "",
        "HGPR_VRSS_PRPR_SIGN": sign_code(price - high) if vol else "3",
        "HGPR_VRSS_PRPR": str(price - high) if vol else "0",
        "LWPR_HOUR": hhmmss(tape.low_t) if vol else "",
        "LWPR_VRSS_PRPR_SIGN": sign_code(price - low) if vol else "3",
        "LWPR_VRSS_PRPR": str(price - low) if vol else "0",
        "BSOP_DATE": date,
        "NEW_MKOP_CLS_CODE": "20" if hour_cls == "0" else "10",
        "TRHT_YN": "N",
        "ASKP_RSQN1": str(quote.ask_qty[0]),
        "BIDP_RSQN1": str(quote.bid_qty[0]),
        "TOTAL_ASKP_RSQN": str(sum(quote.ask_qty)),
        "TOTAL_BIDP_RSQN": str(sum(quote.bid_qty)),
        "VOL_TNRT": f"{vol * 100 / ref.shares:.2f}",
        "PRDY_SMNS_HOUR_ACML_VOL": str(prev_same),
        "PRDY_SMNS_HOUR_ACML_VOL_RATE": pct(vol, prev_same),
        "HOUR_CLS_CODE": hour_cls,
        "MRKT_TRTM_CLS_CODE": "",
        "VI_STND_PRC": str(vi_ref),
        "MARKET_CLS_CODE": market_cls,
    }


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
    rec: dict[str, str] = {
        "MKSC_SHRN_ISCD": ref.code,
        "BSOP_HOUR": hhmmss(t),
        "HOUR_CLS_CODE": hour_cls,
        "TOTAL_ASKP_RSQN": str(total_ask),
        "TOTAL_BIDP_RSQN": str(total_bid),
        "OVTM_TOTAL_ASKP_RSQN": "0",
        "OVTM_TOTAL_BIDP_RSQN": "0",
        "ACML_VOL": str(acml_vol),
        "TOTAL_ASKP_RSQN_ICDC": str(total_ask - prev_totals[0]),
        "TOTAL_BIDP_RSQN_ICDC": str(total_bid - prev_totals[1]),
        "OVTM_TOTAL_ASKP_ICDC": "0",
        "OVTM_TOTAL_BIDP_ICDC": "0",
        "STCK_DEAL_CLS_CODE": "0",
        "MARKET_CLS_CODE": market_cls,
    }
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
    else:
        rec["ANTC_CNPR"] = rec["ANTC_CNQN"] = rec["ANTC_VOL"] = rec["ANTC_CNTG_VRSS"] = "0"
        rec["ANTC_CNTG_VRSS_SIGN"] = "3"
        rec["ANTC_CNTG_PRDY_CTRT"] = "0.00"
    for prefix, mid in (("KMID", kmid), ("NMID", nmid)):
        if mid is not None:
            rec[f"{prefix}_PRC"] = str(mid.price)
            rec[f"{prefix}_TOTAL_RSQN"] = str(mid.rest)
            rec[f"{prefix}_CLS_CODE"] = mid.side
    return rec


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
