"""KRX-vs-NXT mid-price spread per symbol (`kis.spread.krx_nxt`).

Faust has no joins: one agent reads both book topics (co-partitioned by symbol: checked at
start-up) and keeps the latest level-1 quote of each venue per symbol in a table. Every
update of either side publishes a record pairing it with the other venue's latest quote,
unless a side is empty or the pair is further apart in time than the staleness bound.

Ages are measured on the producer's receive times (microseconds), not on the books' HHMMSS
stamps (whole seconds only) and never on the processor's clock. Each record names both
quotes by receive time, so a copy replayed after a restart is recognisable.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from kis_stream import topics
from processors.inputs import Book, book_from

if TYPE_CHECKING:
    from processors.app import Processors

KRX, NXT = "KRX", "NXT"
BID, ASK, BID_QTY, ASK_QTY, EVENT_TIME, RECEIVED_AT, SRC = range(7)


def quote_of(book: Book, offset: int) -> list[Any]:
    """The level-1 quote kept per venue (a list: compact in the changelog)."""
    return [
        book.bid[0],
        book.ask[0],
        book.bid_qty[0],
        book.ask_qty[0],
        book.event_time,
        book.received_at,
        offset,
    ]


def quote_empty(quote: list[Any]) -> bool:
    """A side without a positive price and quantity at level 1 (auction, halt, VI)."""
    for i in (BID, ASK, BID_QTY, ASK_QTY):
        value = quote[i]
        if value is None or value <= 0:
            return True
    return False


def spread_record(
    symbol: str, trigger: str, krx: list[Any], nxt: list[Any], max_age_ms: float
) -> dict[str, Any] | str:
    """The published value (schemas/derived/spread_krx_nxt.avsc), or why it is skipped.

    spread_krw = NXT mid - KRX mid; spread_bps is that over the KRX mid; age_ms is how much
    older the older quote is than the newer one; crossed: one venue's best bid above the
    other's best ask.
    """
    if quote_empty(krx):
        return "krx side empty"
    if quote_empty(nxt):
        return "nxt side empty"
    age_ms = abs(krx[RECEIVED_AT] - nxt[RECEIVED_AT]) / 1000
    if age_ms > max_age_ms:
        return "stale"
    krx_mid = (krx[BID] + krx[ASK]) / 2
    nxt_mid = (nxt[BID] + nxt[ASK]) / 2
    spread = nxt_mid - krx_mid
    return {
        "symbol": symbol,
        "trigger_venue": trigger,
        "krx_bid": krx[BID],
        "krx_ask": krx[ASK],
        "krx_mid": krx_mid,
        "nxt_bid": nxt[BID],
        "nxt_ask": nxt[ASK],
        "nxt_mid": nxt_mid,
        "spread_krw": spread,
        "spread_bps": spread / krx_mid * 10_000,
        "age_ms": age_ms,
        "crossed": krx[BID] > nxt[ASK] or nxt[BID] > krx[ASK],
        "krx_event_time": krx[EVENT_TIME],
        "nxt_event_time": nxt[EVENT_TIME],
        "krx_received_at": krx[RECEIVED_AT],
        "nxt_received_at": nxt[RECEIVED_AT],
    }


@dataclass(slots=True)
class SpreadOutcome:
    record: dict[str, Any] | None
    reason: str | None = None


class SpreadBook:
    """Latest KRX and NXT quotes per symbol over a key-value store.

    `store[symbol]` = {"KRX": quote | None, "NXT": quote | None, "p": partition}. A quote is
    replaced only by one from a later source offset, so a replay after a restore cannot roll
    the state back; the replayed update is still paired and published (a recognisable copy).
    """

    def __init__(self, store: MutableMapping[str, Any], max_age_ms: float) -> None:
        self.store = store
        self.max_age_ms = max_age_ms

    def on_book(self, book: Book, *, offset: int, partition: int) -> SpreadOutcome:
        venue = book.venue
        if venue not in (KRX, NXT):
            return SpreadOutcome(None, "not a KRX or NXT book")
        other_venue = NXT if venue == KRX else KRX
        quote = quote_of(book, offset)
        state = self.store.get(book.symbol)
        if state is None:
            state = {KRX: None, NXT: None, "p": partition}
        mine = state[venue]
        if mine is None or offset > mine[SRC]:
            self.store[book.symbol] = {**state, venue: quote, "p": partition}
        other = state[other_venue]
        if other is None:
            return SpreadOutcome(None, f"no {other_venue.lower()} quote yet")
        krx, nxt = (quote, other) if venue == KRX else (other, quote)
        result = spread_record(book.symbol, venue, krx, nxt, self.max_age_ms)
        if isinstance(result, str):
            return SpreadOutcome(None, result)
        return SpreadOutcome(result)


# ---------------------------------------------------------------------------- the agent


def register(p: Processors) -> None:
    """Add the spread agent (both book topics, one table) to the app."""
    stats = p.stats["spread"]
    table = p.app.Table("spread_books", default=None, partitions=p.partitions["spread"])
    books = SpreadBook(table, p.settings.spread_max_age_ms)
    out = p.output(topics.SPREAD_KRX_NXT)

    @p.app.agent(p.raw_input(*p.topology.inputs("spread")), name="spread", concurrency=1)
    async def spread(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            stats.inc("consumed")
            record = p.decode("spread", event.value)
            if record is None:
                continue
            book = book_from(record)
            if isinstance(book, str):
                stats.skip(book, record.get("symbol"))
                continue
            message = event.message
            outcome = books.on_book(book, offset=message.offset, partition=message.partition)
            if outcome.record is None:
                stats.inc(f"not published: {outcome.reason}")
                continue
            await out.send(key=book.symbol, value=outcome.record)
            stats.inc("published")
