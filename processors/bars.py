"""1-second OHLCV bars per symbol and venue (`kis.bars.1s`), closed on event time.

Why not a Faust windowed table: those close windows on the wall clock and may never close a
window restored from a changelog. Here one plain table holds, per `symbol|venue`, the open
bar and bookkeeping, and per `symbol|venue|window_start` each bar already published (kept for
the revision horizon, so a late tick can revise it). A bar is published when a tick of a later
second arrives, or when the wall-clock grace passes without ticks (a control message from the
grace timer walks the open bars of its partition: tables may only change inside a stream).

Delivery is at-least-once. State writes for a key go to one changelog partition in order,
so after a crash the restored state is a prefix of what was written: ticks at or below the
offset recorded in the state are skipped (already counted), and the bars published shortly
before the crash are published again after recovery (identical records).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust

from processors.faust_speed import ends_batch
from processors.inputs import Trade, trade_from
from processors.topology import BARS_LATE_OUT, BARS_OUT
from processors.writeback import WriteBack

if TYPE_CHECKING:
    from processors.app import Processors

BAR_MS = 1000

# Accumulator layout (a list so that it is compact in the changelog's JSON).
WS, OPEN, HIGH, LOW, CLOSE, VOLUME, TURNOVER, COUNT, BUY, SELL = range(10)


def new_acc(tick: Trade) -> list[int]:
    buy = tick.volume if tick.side > 0 else 0
    sell = tick.volume if tick.side < 0 else 0
    price = tick.price
    return [tick.second, price, price, price, price, tick.volume, price * tick.volume, 1, buy, sell]


def add_tick(acc: list[int], tick: Trade) -> None:
    """Fold a tick into a bar in arrival order (the exchange stamps whole seconds only)."""
    price = tick.price
    if price > acc[HIGH]:
        acc[HIGH] = price
    if price < acc[LOW]:
        acc[LOW] = price
    acc[CLOSE] = price
    acc[VOLUME] += tick.volume
    acc[TURNOVER] += price * tick.volume
    acc[COUNT] += 1
    if tick.side > 0:
        acc[BUY] += tick.volume
    elif tick.side < 0:
        acc[SELL] += tick.volume


def bar_record(symbol: str, venue: str, acc: list[int], revision: int) -> dict[str, Any]:
    """The published `kis.bars.1s` value (schemas/derived/bars_1s.avsc)."""
    volume = acc[VOLUME]
    return {
        "symbol": symbol,
        "venue": venue,
        "window_start": acc[WS],
        "window_end": acc[WS] + BAR_MS,
        "open": acc[OPEN],
        "high": acc[HIGH],
        "low": acc[LOW],
        "close": acc[CLOSE],
        "volume": volume,
        "turnover": acc[TURNOVER],
        "vwap": acc[TURNOVER] / volume if volume else None,
        "trade_count": acc[COUNT],
        "buy_volume": acc[BUY],
        "sell_volume": acc[SELL],
        "revision": revision,
    }


def late_record(tick: Trade, newest: int) -> dict[str, Any]:
    """A tick too old to revise its bar (schemas/derived/bars_1s_late.avsc)."""
    return {
        "symbol": tick.symbol,
        "venue": tick.venue,
        "window_start": tick.second,
        "price": tick.price,
        "volume": tick.volume,
        "side": {1: "buy", -1: "sell"}.get(tick.side),
        "newest_window_start": newest,
    }


def history_key(key: str, window_start: int) -> str:
    return f"{key}|{window_start}"


@dataclass(slots=True)
class TickOutcome:
    bars: list[dict[str, Any]] = field(default_factory=list)
    """Bars to publish now: a closed bar, a revised bar, or a past second's first bar."""
    late: dict[str, Any] | None = None
    """Set when the tick's second is older than the revision horizon (goes to the late topic)."""
    replayed: bool = False
    """The tick was already counted before a restart (offset at or below the state's)."""


class BarLedger:
    """Bar bookkeeping over a key-value store (a Faust table in the worker, a dict in tests).

    `store[key]` (key = `symbol|venue`) is the open state: `bar` (accumulator or None),
    `newest` (latest window start seen), `hmin` (oldest window start possibly still in the
    history), `src` (offset of the last tick counted), `wall` (wall time that tick was
    processed: the grace timer's reference) and `p` (partition). `store[key|window_start]`
    holds a published bar (`bar`, `rev`, `p`, `wall`) for the revision horizon.
    """

    def __init__(self, store: MutableMapping[str, Any], horizon_ms: int) -> None:
        self.store = store
        self.horizon_ms = max(0, horizon_ms - horizon_ms % BAR_MS)

    def on_tick(self, tick: Trade, *, offset: int, partition: int, wall: float) -> TickOutcome:
        key = f"{tick.symbol}|{tick.venue}"
        state = self.store.get(key)
        if state is None:
            state = {"bar": None, "newest": tick.second - BAR_MS, "hmin": tick.second, "src": -1}
        elif offset <= state["src"]:
            return TickOutcome(replayed=True)
        state = dict(state)
        state["src"], state["p"] = offset, partition
        outcome = TickOutcome()
        second, acc = tick.second, state["bar"]
        if acc is not None and acc[WS] == second:
            acc = list(acc)
            add_tick(acc, tick)
            state["bar"], state["wall"] = acc, wall
        elif (acc is not None and second > acc[WS]) or (acc is None and second > state["newest"]):
            if acc is not None:
                outcome.bars.append(self._publish(key, tick, acc, 0, partition, wall))
            state["bar"], state["wall"] = new_acc(tick), wall
            self._expire(key, state, second)
        else:
            self._late(key, tick, state, partition, wall, outcome)
        self.store[key] = state
        return outcome

    def on_quiet(self, key: str, *, wall: float, grace: float) -> dict[str, Any] | None:
        """Publish the open bar of `key` if no tick has reached it for `grace` seconds."""
        state = self.store.get(key)
        if state is None or state["bar"] is None or wall - state["wall"] < grace:
            return None
        acc = state["bar"]
        symbol, venue = key.split("|")
        record = self._publish_acc(key, symbol, venue, acc, 0, state["p"], wall)
        state = dict(state)
        state["bar"] = None
        self.store[key] = state
        return record

    def _late(
        self,
        key: str,
        tick: Trade,
        state: dict[str, Any],
        partition: int,
        wall: float,
        outcome: TickOutcome,
    ) -> None:
        """A tick for a second that is over: revise its bar, open a past bar, or report it."""
        hkey = history_key(key, tick.second)
        published = self.store.get(hkey)
        if published is not None:
            acc = list(published["bar"])
            add_tick(acc, tick)
            outcome.bars.append(
                self._publish(key, tick, acc, published["rev"] + 1, partition, wall)
            )
        elif tick.second >= state["newest"] - self.horizon_ms:
            # No tick had been seen for this second: its bar is over (a later one exists).
            outcome.bars.append(self._publish(key, tick, new_acc(tick), 0, partition, wall))
            state["hmin"] = min(state["hmin"], tick.second)
        else:
            outcome.late = late_record(tick, state["newest"])

    def _publish(
        self, key: str, tick: Trade, acc: list[int], rev: int, partition: int, wall: float
    ) -> dict[str, Any]:
        return self._publish_acc(key, tick.symbol, tick.venue, acc, rev, partition, wall)

    def _publish_acc(
        self,
        key: str,
        symbol: str,
        venue: str,
        acc: list[int],
        rev: int,
        partition: int,
        wall: float,
    ) -> dict[str, Any]:
        # Written before the open state that records it: the changelog keeps that order.
        self.store[history_key(key, acc[WS])] = {
            "bar": acc,
            "rev": rev,
            "p": partition,
            "wall": wall,
        }
        return bar_record(symbol, venue, acc, rev)

    def _expire(self, key: str, state: dict[str, Any], newest: int) -> None:
        """Advance `newest`; forget published bars older than the horizon.

        Published bars all lie in [hmin, previous newest], and hmin trails newest by at most
        the horizon, so this is at most horizon/1s dictionary lookups.
        """
        cutoff = newest - self.horizon_ms
        window_start, stop = state["hmin"], min(cutoff, state["newest"] + BAR_MS)
        while window_start < stop:
            hkey = history_key(key, window_start)
            if hkey in self.store:
                del self.store[hkey]
            window_start += BAR_MS
        state["newest"] = newest
        state["hmin"] = max(state["hmin"], cutoff)


def recent_published(
    items: list[tuple[str, Any]], partitions: set[int], window_s: float
) -> list[dict[str, Any]]:
    """Published bars to send again after recovery, oldest first.

    Per partition, every bar still in the history that was published within `window_s`
    (wall clock) of the partition's last publication: enough to cover what a crash can
    have lost between the changelog write and the output's delivery.
    """
    latest: dict[int, float] = {}
    entries: list[tuple[float, int, str, dict[str, Any]]] = []
    for key, value in items:
        if key.count("|") != 2 or not isinstance(value, dict) or value.get("p") not in partitions:
            continue
        partition, wall = value["p"], value["wall"]
        latest[partition] = max(latest.get(partition, wall), wall)
        entries.append((wall, partition, key, value))
    out = []
    for wall, partition, key, value in sorted(entries, key=lambda e: (e[0], e[2])):
        if wall >= latest[partition] - window_s:
            symbol, venue, _ = key.split("|")
            out.append(bar_record(symbol, venue, value["bar"], value["rev"]))
    return out


# ---------------------------------------------------------------------------- the agent


def register(p: Processors) -> None:
    """Add the bars agent, its table, the grace timer and the recovery hook to the app."""
    app, settings = p.app, p.settings
    stats = p.stats["bars"]
    partitions = p.partitions["bars"]
    inputs = p.topology.inputs("bars")
    (clock_name,) = p.topology.helpers("bars")
    table = app.Table("bars", default=None, partitions=partitions)
    store = WriteBack(table)  # one changelog write per key and batch (processors/writeback.py)
    ledger = BarLedger(store, int(settings.bar_horizon * 1000))
    out, late_out = p.output(BARS_OUT), p.output(BARS_LATE_OUT)
    clock = p.internal(clock_name, partitions)
    # Keys with an open bar, by partition: what the grace timer walks (rebuilt on recovery).
    open_keys: dict[int, set[str]] = defaultdict(set)

    async def publish(bars: list[dict[str, Any]]) -> None:
        for bar in bars:
            await out.send(key=f"{bar['symbol']}|{bar['venue']}", value=bar)
        stats.inc("published", len(bars))

    @app.agent(p.raw_input(*inputs, clock_name), name="bars", concurrency=1)
    async def bars(stream: faust.StreamT[bytes]) -> None:
        async for event in p.events(stream, unguarded=frozenset({clock_name})):
            message = event.message
            if message.topic == clock_name:
                await close_quiet(message.partition, event.value)
            else:
                await on_trade(message, event.value)
            if ends_batch(event):  # before the batch is acknowledged
                store.flush()

    async def on_trade(message: Any, value: Any) -> None:
        stats.inc("consumed")
        record = p.decode("bars", value)
        if record is None:
            return
        tick = trade_from(record)
        if isinstance(tick, str):
            stats.skip(tick, record.get("symbol"))
            return
        outcome = ledger.on_tick(
            tick, offset=message.offset, partition=message.partition, wall=time.time()
        )
        if outcome.replayed:
            stats.inc("replayed")
            return
        open_keys[message.partition].add(f"{tick.symbol}|{tick.venue}")
        await publish(outcome.bars)
        if outcome.late is not None:
            stats.inc("too late")
            await late_out.send(key=f"{tick.symbol}|{tick.venue}", value=outcome.late)

    async def close_quiet(partition: int, payload: Any) -> None:
        try:
            wall = float(json.loads(payload)["wall"])
        except (ValueError, KeyError, TypeError):
            stats.skip("bad clock message", payload)
            return
        keys = open_keys[partition]
        for key in sorted(keys):
            bar = ledger.on_quiet(key, wall=wall, grace=settings.bar_grace)
            if bar is not None:
                keys.discard(key)
                await publish([bar])

    @app.timer(interval=settings.bar_clock)
    async def grace_clock() -> None:
        """Ask each partition this worker owns to publish its quiet bars (via the stream)."""
        payload = json.dumps({"wall": time.time()}).encode()
        for partition in sorted(p.active_partitions(inputs)):
            await clock.send(key=b"clock", value=payload, partition=partition)

    @table.on_recover
    async def on_recover() -> None:
        active = p.active_partitions(inputs)
        open_keys.clear()
        for key, value in list(table.items()):
            if key.count("|") == 1 and value.get("bar") is not None:
                open_keys[value["p"]].add(key)
        again = recent_published(list(table.items()), active, settings.republish_window)
        await publish(again)
        stats.inc("republished", len(again))
