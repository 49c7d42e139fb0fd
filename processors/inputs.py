"""Raw KIS records (as decoded from the raw Avro topics) -> the small typed inputs of each stream.

The codec strips Avro logical types, so time fields arrive as int milliseconds since midnight
(Korea time), dates as int days since 1970-01-01 and instants as UTC epoch ints. `normalise`
also accepts the datetime objects a logical-type-aware reader would produce, so a record from
any Avro reader can be fed in. A record that cannot be used gives a short reason string
instead of an input, never an exception: bad data must not stop a worker.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KST_OFFSET_MS = 9 * 3_600_000
"""Korea time is UTC+9 all year (no daylight saving)."""
DAY_MS = 86_400_000
LEVELS = 10

_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def kst_instant_ms(days: int, ms_of_day: int) -> int:
    """UTC epoch ms of a Korea-time wall clock `ms_of_day` on the date `days` since epoch."""
    return days * DAY_MS + ms_of_day - KST_OFFSET_MS


def kst_date(epoch_ms: int) -> int:
    """The Korea-time calendar date (days since epoch) of a UTC instant in epoch ms."""
    return (epoch_ms + KST_OFFSET_MS) // DAY_MS


def _time_ms(value: dt.time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000


def _instant(value: dt.datetime, unit: int) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * unit + delta.microseconds * unit // 1_000_000


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """Turn logical-type objects into the ints of the raw contract, in place.

    `received_at` becomes epoch microseconds, every other datetime epoch milliseconds; times
    become ms since midnight and dates days since epoch.
    """
    for name, value in record.items():
        if isinstance(value, dt.datetime):
            record[name] = _instant(value, 1_000_000 if name == "received_at" else 1000)
        elif isinstance(value, dt.date):
            record[name] = (value - _EPOCH_DATE).days
        elif isinstance(value, dt.time):
            record[name] = _time_ms(value)
    return record


def as_int(value: Any) -> int | None:
    """An int field's value, or None for anything else (bool included)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def business_date(record: Mapping[str, Any]) -> int | None:
    """Business date (days since epoch, Korea time) of a record without a date field.

    Taken from the envelope's exchange `event_time` (the decoder stamps it with the session's
    business date); a record without one falls back to its receive time, never to `now()`.
    """
    event_time = as_int(record.get("event_time"))
    if event_time is not None:
        return kst_date(event_time)
    received_at = as_int(record.get("received_at"))
    if received_at is not None:
        return kst_date(received_at // 1000)
    return None


# ---------------------------------------------------------------------------------- trades

BUY, SELL, NEUTRAL = 1, -1, 0


def trade_side(code: Any) -> int:
    """KIS trade-side code: "1" buyer-initiated, "5" seller-initiated, anything else neither."""
    if code == "1":
        return BUY
    if code == "5":
        return SELL
    return NEUTRAL


# Trade and Book are built once per input on the hot path: plain slotted dataclasses (a
# frozen one sets each field through object.__setattr__, a few microseconds per input).


@dataclass(slots=True)
class Trade:
    symbol: str
    venue: str
    second: int
    """Start of the exchange second the tick is stamped with, UTC epoch ms."""
    price: int
    volume: int
    side: int


def trade_from(record: Mapping[str, Any]) -> Trade | str:
    """A trade tick, or the reason it cannot go into a bar.

    Event time is the exchange's business date + HHMMSS in Korea time; when the record has no
    business date the envelope's event time is used. The trade side is `cntg_cls_code`;
    H0STCNT0's catalogue names that position `ccld_dvsn`, so both are read.
    """
    symbol, venue = record.get("symbol"), record.get("venue")
    if not isinstance(symbol, str) or not symbol or not isinstance(venue, str) or not venue:
        return "no symbol or venue"
    price, volume = as_int(record.get("stck_prpr")), as_int(record.get("cntg_vol"))
    if price is None or price <= 0:
        return "no price"
    if volume is None or volume < 0:
        return "no volume"
    days, hour = as_int(record.get("bsop_date")), as_int(record.get("stck_cntg_hour"))
    if days is not None and hour is not None:
        instant = kst_instant_ms(days, hour)
    else:
        event_time = as_int(record.get("event_time"))
        if event_time is None:
            return "no event time"
        instant = event_time
    code = record.get("cntg_cls_code")
    if code is None:
        code = record.get("ccld_dvsn")
    return Trade(symbol, venue, instant - instant % 1000, price, volume, trade_side(code))


TRADE_FIELDS = frozenset(
    {"stck_prpr", "cntg_vol", "bsop_date", "stck_cntg_hour", "cntg_cls_code", "ccld_dvsn"}
)
"""Raw trade fields the bars read (the decoder stops after the last of them)."""


# ----------------------------------------------------------------------------------- books

ASK_PRICES = tuple(f"askp{i}" for i in range(1, LEVELS + 1))
BID_PRICES = tuple(f"bidp{i}" for i in range(1, LEVELS + 1))
ASK_QTYS = tuple(f"askp_rsqn{i}" for i in range(1, LEVELS + 1))
BID_QTYS = tuple(f"bidp_rsqn{i}" for i in range(1, LEVELS + 1))


@dataclass(slots=True)
class Book:
    symbol: str
    venue: str
    event_time: int | None
    """Exchange time (UTC epoch ms) from the envelope; books carry only HHMMSS."""
    received_at: int
    """When the producer read the frame, UTC epoch microseconds."""
    ask: tuple[int | None, ...]
    bid: tuple[int | None, ...]
    ask_qty: tuple[int | None, ...]
    bid_qty: tuple[int | None, ...]
    total_ask_qty: int | None
    total_bid_qty: int | None

    @property
    def has_bid(self) -> bool:
        """Level 1 of the bid side has a price and a quantity (false in auctions, halts)."""
        return _level(self.bid[0], self.bid_qty[0])

    @property
    def has_ask(self) -> bool:
        return _level(self.ask[0], self.ask_qty[0])


def _level(price: int | None, qty: int | None) -> bool:
    return price is not None and price > 0 and qty is not None and qty > 0


INT_OR_NONE = frozenset({int, type(None)})

BOOK_COLUMNS: tuple[str, ...] = (
    "symbol",
    "venue",
    "event_time",
    "received_at",
    *ASK_PRICES,
    *BID_PRICES,
    *ASK_QTYS,
    *BID_QTYS,
    "total_askp_rsqn",
    "total_bidp_rsqn",
)
"""The raw book fields a `Book` is made of, in the order `book_from_values` takes them."""


def envelope_problem(symbol: Any, venue: Any, received_at: Any) -> str | None:
    """Why a raw book's envelope cannot be used (no symbol or venue, no receive time), or
    None."""
    if not isinstance(symbol, str) or not symbol or not isinstance(venue, str) or not venue:
        return "no symbol or venue"
    if not isinstance(received_at, int) or isinstance(received_at, bool):
        return "no received_at"
    return None


def book_from_values(values: tuple[Any, ...]) -> Book | str:
    """`book_from` of the values of `BOOK_COLUMNS`, in that order (a decoder's `values`)."""
    symbol, venue, event_time, received_at = values[0], values[1], values[2], values[3]
    problem = envelope_problem(symbol, venue, received_at)
    if problem is not None:
        return problem
    levels = values[4:44]
    if not INT_OR_NONE.issuperset(map(type, levels)):  # (from the Avro decoder: never)
        levels = tuple(as_int(v) for v in levels)
    return Book(
        symbol,
        venue,
        as_int(event_time),
        received_at,
        levels[0:10],
        levels[10:20],
        levels[20:30],
        levels[30:40],
        as_int(values[44]),
        as_int(values[45]),
    )


def book_from(record: Mapping[str, Any]) -> Book | str:
    """A 10-level book snapshot, or the reason the record is not one."""
    return book_from_values(tuple(map(record.get, BOOK_COLUMNS)))


BOOK_FIELDS = frozenset(
    {*ASK_PRICES, *BID_PRICES, *ASK_QTYS, *BID_QTYS, "total_askp_rsqn", "total_bidp_rsqn"}
)
"""Raw book fields the imbalance reads (the decoder stops after the last of them)."""
QUOTE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "venue",
    "event_time",
    "received_at",
    BID_PRICES[0],
    ASK_PRICES[0],
    BID_QTYS[0],
    ASK_QTYS[0],
)
"""Raw book fields the spread reads, level 1 only (the decoder stops after the last of them),
in the order `spread.quote_from_values` takes them."""


# --------------------------------------------------------------------------------- program


@dataclass(slots=True, frozen=True)
class ProgramUpdate:
    """KIS program-trading counters: cumulative for the business day, per symbol and venue."""

    symbol: str
    venue: str
    business_date: int
    event_time: int | None
    received_at: int
    sell_qty: int | None
    sell_amount: int | None
    buy_qty: int | None
    buy_amount: int | None
    net_qty: int
    net_amount: int

    def values(self) -> tuple[int | None, ...]:
        """The cumulative counters; equal values mean the update carries nothing new."""
        return (
            self.net_qty,
            self.net_amount,
            self.buy_qty,
            self.buy_amount,
            self.sell_qty,
            self.sell_amount,
        )


def _net(net: int | None, buy: int | None, sell: int | None) -> int | None:
    if net is not None:
        return net
    if buy is not None and sell is not None:
        return buy - sell
    return None


def program_from(record: Mapping[str, Any]) -> ProgramUpdate | str:
    """A program-trading update, or the reason it cannot be used.

    The net figures are KIS' `ntby_*` fields; when KIS leaves them empty they are derived as
    buy - sell. The business date comes from the envelope (the TR has no date field).
    """
    symbol, venue = record.get("symbol"), record.get("venue")
    if not isinstance(symbol, str) or not symbol or not isinstance(venue, str) or not venue:
        return "no symbol or venue"
    received_at = as_int(record.get("received_at"))
    if received_at is None:
        return "no received_at"
    day = business_date(record)
    if day is None:
        return "no business date"
    sell_qty, buy_qty = as_int(record.get("seln_cnqn")), as_int(record.get("shnu_cnqn"))
    sell_amount, buy_amount = as_int(record.get("seln_tr_pbmn")), as_int(record.get("shnu_tr_pbmn"))
    net_qty = _net(as_int(record.get("ntby_cnqn")), buy_qty, sell_qty)
    net_amount = _net(as_int(record.get("ntby_tr_pbmn")), buy_amount, sell_amount)
    if net_qty is None or net_amount is None:
        return "no net-buy figures"
    return ProgramUpdate(
        symbol=symbol,
        venue=venue,
        business_date=day,
        event_time=as_int(record.get("event_time")),
        received_at=received_at,
        sell_qty=sell_qty,
        sell_amount=sell_amount,
        buy_qty=buy_qty,
        buy_amount=buy_amount,
        net_qty=net_qty,
        net_amount=net_amount,
    )
