"""Program-trading net-buy per symbol and venue, and venue-wide totals (`kis.program.netbuy`).

KIS sends, per symbol, cumulative-for-the-day program buy/sell quantities and amounts. Two
agents:

1. per `symbol|venue` (partitioned like the raw topics): keep the latest cumulative values,
   publish them with the change since the previous update, and forward them to an internal
   topic keyed by venue;
2. per venue: keep every symbol's latest cumulative values and publish the venue total as
   the sum of those latest values. A repeated or replayed update replaces a symbol's value
   with itself, so nothing can inflate the total. A new business date starts from zero.

Delivery is at-least-once: updates at or below the source offset recorded in the state are
already applied and skipped; after recovery the latest records are published again
(identical copies) so none is lost between a changelog write and an output's delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
import orjson

from kis_stream import topics
from processors.faust_speed import ends_batch
from processors.inputs import ProgramUpdate, program_from
from processors.writeback import WriteBack

if TYPE_CHECKING:
    from processors.app import Processors

MARKET = "*"
"""The `symbol` part of a venue total's key (`*|KRX`)."""

SYMBOL_SCOPE, MARKET_SCOPE = "symbol", "market"


def empty_record(scope: str, symbol: str | None, venue: str, day: int) -> dict[str, Any]:
    return {
        "scope": scope,
        "symbol": symbol,
        "venue": venue,
        "business_date": day,
        "event_time": None,
        "received_at": None,
        "net_qty": None,
        "net_amount": None,
        "net_qty_change": None,
        "net_amount_change": None,
        "buy_qty": None,
        "buy_amount": None,
        "sell_qty": None,
        "sell_amount": None,
        "market_net_qty": None,
        "market_net_amount": None,
        "market_symbols": None,
    }


def symbol_record(update: ProgramUpdate, previous: list[int] | None) -> dict[str, Any]:
    """A symbol's cumulative figures and the change since its previous update that day."""
    record = empty_record(SYMBOL_SCOPE, update.symbol, update.venue, update.business_date)
    record.update(
        event_time=update.event_time,
        received_at=update.received_at,
        net_qty=update.net_qty,
        net_amount=update.net_amount,
        net_qty_change=update.net_qty - previous[0] if previous is not None else None,
        net_amount_change=update.net_amount - previous[1] if previous is not None else None,
        buy_qty=update.buy_qty,
        buy_amount=update.buy_amount,
        sell_qty=update.sell_qty,
        sell_amount=update.sell_amount,
    )
    return record


@dataclass(slots=True)
class SymbolOutcome:
    record: dict[str, Any] | None
    """The record to publish (None: nothing new)."""
    reason: str | None = None
    """Why nothing is published: "replayed", "duplicate" or "stale date"."""


class SymbolLedger:
    """Latest cumulative values per `symbol|venue` over a key-value store.

    `store[key]` = `day`, `src` (source offset of the last update applied), `values` (the
    cumulative counters), `record` (the last record published) and `p` (partition).
    """

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store

    def on_update(self, update: ProgramUpdate, *, offset: int, partition: int) -> SymbolOutcome:
        key = f"{update.symbol}|{update.venue}"
        state = self.store.get(key)
        values = list(update.values())
        previous: list[int] | None = None
        if state is not None:
            if update.business_date < state["day"]:
                return SymbolOutcome(None, "stale date")
            if update.business_date == state["day"]:
                if offset <= state["src"]:
                    return SymbolOutcome(None, "replayed")
                if values == state["values"]:
                    self.store[key] = {**state, "src": offset}
                    return SymbolOutcome(None, "duplicate")
                previous = state["values"][:2]
        record = symbol_record(update, previous)
        self.store[key] = {
            "day": update.business_date,
            "src": offset,
            "values": values,
            "record": record,
            "p": partition,
        }
        return SymbolOutcome(record)


def latest_records(
    items: Iterable[tuple[str, Any]], partitions: set[int]
) -> list[tuple[dict[str, Any], int]]:
    """Each symbol's last published record and its source offset, in the given partitions.

    Sent again after recovery, to the output and to the venue totals (which ignore it unless
    they had missed it).
    """
    return [
        (value["record"], value["src"])
        for _, value in sorted(items, key=lambda kv: kv[0])
        if isinstance(value, dict) and value.get("p") in partitions and "record" in value
    ]


# ------------------------------------------------------------------------ venue totals


@dataclass(slots=True)
class VenueTotal:
    day: int
    net_qty: int = 0
    net_amount: int = 0
    symbols: int = 0


class MarketLedger:
    """Per venue: every symbol's latest cumulative net-buy, and their sum.

    `store["venue|symbol"]` = `day`, `src` (source offset of the symbol's update), `net` =
    [qty, amount] and `p`. `store["venue"]` = `day` (the venue's current business date), `p`.
    The sums are a cache rebuilt from the store (`rebuild`) after every recovery and kept in
    step with each write, so the total is always the sum of the stored latest values.
    """

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store
        self.totals: dict[str, VenueTotal] = {}

    def rebuild(self, partitions: set[int] | None = None) -> None:
        """Recompute the sums from the stored symbol values (after a restore)."""
        totals: dict[str, VenueTotal] = {}
        for key, value in list(self.store.items()):
            if "|" in key or not isinstance(value, dict):
                continue
            if partitions is None or value.get("p") in partitions:
                totals[key] = VenueTotal(value["day"])
        for key, value in list(self.store.items()):
            venue, sep, _ = key.partition("|")
            total = totals.get(venue)
            if sep and total is not None and value["day"] == total.day:
                total.net_qty += value["net"][0]
                total.net_amount += value["net"][1]
                total.symbols += 1
        self.totals = totals

    def on_symbol(
        self, record: dict[str, Any], *, src: int, partition: int
    ) -> dict[str, Any] | None:
        """Apply a symbol's latest values; the venue total record, or None if nothing moved."""
        venue, symbol, day = record["venue"], record["symbol"], record["business_date"]
        total = self.totals.get(venue)
        if total is None or day > total.day:
            if total is not None:
                self._forget_day(venue, total.day)
            total = self.totals[venue] = VenueTotal(day)
            self.store[venue] = {"day": day, "p": partition}
        elif day < total.day:
            return None
        key = f"{venue}|{symbol}"
        stored = self.store.get(key)
        if stored is not None and stored["day"] == day:
            if src <= stored["src"]:
                return None
            total.net_qty -= stored["net"][0]
            total.net_amount -= stored["net"][1]
        else:
            total.symbols += 1
        net = [record["net_qty"], record["net_amount"]]
        total.net_qty += net[0]
        total.net_amount += net[1]
        self.store[key] = {"day": day, "src": src, "net": net, "p": partition}
        out = market_record(venue, total)
        out.update(
            symbol=symbol,
            event_time=record["event_time"],
            received_at=record["received_at"],
            net_qty=net[0],
            net_amount=net[1],
        )
        return out

    def _forget_day(self, venue: str, day: int) -> None:
        prefix = venue + "|"
        for key in [k for k, v in self.store.items() if k.startswith(prefix) and v["day"] <= day]:
            del self.store[key]

    def current(self) -> list[dict[str, Any]]:
        """Every venue's current total (sent again on recovery), by venue."""
        return [market_record(venue, self.totals[venue]) for venue in sorted(self.totals)]


def market_record(venue: str, total: VenueTotal) -> dict[str, Any]:
    """A venue-wide total; `symbol` names the symbol whose update moved it (None if resent)."""
    record = empty_record(MARKET_SCOPE, None, venue, total.day)
    record.update(
        market_net_qty=total.net_qty,
        market_net_amount=total.net_amount,
        market_symbols=total.symbols,
    )
    return record


# --------------------------------------------------------------------------- the agents


def register(p: Processors) -> None:
    """Add the per-symbol and the per-venue agents, their tables and recovery hooks."""
    app, stats = p.app, p.stats["program"]
    partitions = p.partitions["program"]
    inputs = p.topology.inputs("program")
    (by_venue_name,) = p.topology.helpers("program")
    symbols_table = app.Table("program_symbols", default=None, partitions=partitions)
    market_table = app.Table("program_market", default=None, partitions=partitions)
    # One changelog write per key and batch of inputs (processors/writeback.py).
    symbols_store, market_store = WriteBack(symbols_table), WriteBack(market_table)
    symbols, market = SymbolLedger(symbols_store), MarketLedger(market_store)
    out = p.output(topics.PROGRAM_NETBUY)
    by_venue = p.internal(by_venue_name, partitions)

    async def forward(record: dict[str, Any], src: int) -> None:
        venue = record["venue"]
        await out.send(key=f"{record['symbol']}|{venue}", value=record)
        await by_venue.send(key=venue.encode(), value=orjson.dumps({"record": record, "src": src}))
        stats.inc("published")

    @app.agent(p.raw_input(*inputs), name="program", concurrency=1)
    async def program(stream: faust.StreamT[bytes]) -> None:
        async for event in p.events(stream):
            await on_update(event.message, event.value)
            if ends_batch(event):  # before the batch is acknowledged
                symbols_store.flush()

    async def on_update(message: Any, value: Any) -> None:
        stats.inc("consumed")
        record = p.decode("program", value)
        if record is None:
            return
        update = program_from(record)
        if isinstance(update, str):
            stats.skip(update, record.get("symbol"))
            return
        outcome = symbols.on_update(update, offset=message.offset, partition=message.partition)
        if outcome.record is None:
            stats.inc(f"not published: {outcome.reason}")
            return
        await forward(outcome.record, message.offset)

    @app.agent(p.raw_input(by_venue_name), name="program_market", concurrency=1)
    async def program_market(stream: faust.StreamT[bytes]) -> None:
        async for event in p.events(stream):
            await on_symbol(event.message, event.value)
            if ends_batch(event):  # before the batch is acknowledged
                market_store.flush()

    async def on_symbol(message: Any, value: Any) -> None:
        try:
            body = orjson.loads(value)
            record, src = body["record"], int(body["src"])
            total = market.on_symbol(record, src=src, partition=message.partition)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            stats.skip("bad venue message", exc)
            return
        if total is not None:
            await out.send(key=f"{MARKET}|{total['venue']}", value=total)
            stats.inc("published totals")

    @symbols_table.on_recover
    async def resend_symbols() -> None:
        latest = latest_records(list(symbols_table.items()), p.active_partitions(inputs))
        for record, src in latest:
            await forward(record, src)
        stats.inc("republished", len(latest))

    @market_table.on_recover
    async def resend_totals() -> None:
        market.rebuild(p.active_partitions((by_venue_name,)))
        for total in market.current():
            await out.send(key=f"{MARKET}|{total['venue']}", value=total)
            stats.inc("republished totals")
