"""KRX-vs-NXT mid-price spread per symbol (`kis.spread.krx_nxt`).

Faust has no joins: one agent reads both book topics (co-partitioned by symbol: checked at
start-up) and keeps each venue's recent level-1 quotes per symbol in a table. Every update of
either venue (the trigger) is paired with the other venue's latest quote *received at or
before the trigger* (an as-of join on the producer's receive time), unless a side is empty or
the pair is further apart than the staleness bound.

Why as-of and not "whatever the other side's latest is when the agent gets here": the agent
sees the two topics interleaved in fetch-batch order, which differs from run to run, between
one worker and two, and after a restart. To pair on receive time the agent holds a trigger
until the other venue's partition has been read past the trigger's receive time (its
watermark), or has been read to its end and `PROCESSORS_SPREAD_SETTLE` has passed (a quiet
venue), or, as a last resort, `PROCESSORS_SPREAD_MAX_WAIT` has passed. Held events are
acknowledged only once published, so a crash replays them; the quote history in the table
makes a replayed trigger find the same quote again, so the output is the same.

Ages are measured on the producer's receive times (microseconds), not on the books' HHMMSS
stamps (whole seconds only) and never on the processor's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition

from kis_stream import topics
from processors.inputs import Book, book_from

if TYPE_CHECKING:
    from processors.app import Processors

KRX, NXT = "KRX", "NXT"
BID, ASK, BID_QTY, ASK_QTY, EVENT_TIME, RECEIVED_AT, SRC = range(7)
MAX_RECENT = 4096
"""Quotes kept in memory per symbol and venue while the other venue is not being read."""


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


@dataclass(slots=True)
class Held:
    """A trigger waiting for the other venue's watermark."""

    symbol: str
    venue: str
    quote: list[Any]
    partition: int
    since: float
    token: Any
    """What the caller needs back with the outcome (the Faust event to acknowledge)."""


class SpreadJoin:
    """As-of join of KRX and NXT quotes on receive time, over a key-value store.

    `store[symbol]` = {"KRX": [quote, ...], "NXT": [quote, ...], "p": partition}: each
    venue's last `history` quotes in source-offset order (what a replay after a restart
    needs). A quote is appended only from a later source offset, so a replay leaves the state
    as it was. In memory, derived and rebuilt after each rebalance: per partition and venue
    the watermark (highest receive time read), the held triggers, and per symbol and venue
    the quotes a trigger not yet decided may still pair with.
    """

    def __init__(
        self,
        store: MutableMapping[str, Any],
        *,
        max_age_ms: float,
        history: int = 32,
        max_wait_s: float = 60.0,
        settle_s: float = 0.1,
    ) -> None:
        self.store = store
        self.max_age_ms = max_age_ms
        self.history = max(1, history)
        self.max_wait_s = max_wait_s
        self.settle_s = settle_s
        self.watermarks: dict[tuple[int, str], int] = {}
        self.last_offsets: dict[tuple[int, str], int] = {}
        self.held: dict[int, deque[Held]] = defaultdict(deque)
        self.recent: dict[tuple[str, str], deque[list[Any]]] = {}

    def reset(self) -> None:
        """Forget the in-memory view after a rebalance: the table is the truth again.

        Held triggers are dropped unpublished and unacknowledged: their offsets were not
        committed, so after the rebalance they are read again (by this worker or another).
        """
        self.watermarks.clear()
        self.last_offsets.clear()
        self.recent.clear()
        self.held.clear()

    def on_book(
        self, book: Book, *, offset: int, partition: int, wall: float, token: Any = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        """Record a book update; the outcomes of every trigger that can be decided now."""
        venue = book.venue
        if venue not in (KRX, NXT):
            return [(token, SpreadOutcome(None, "not a KRX or NXT book"))]
        quote = quote_of(book, offset)
        recent = self._recent(book.symbol, venue)
        if not recent or offset > recent[-1][SRC]:
            recent.append(quote)
            state = self.store.get(book.symbol)
            new_state = dict(state) if state is not None else {KRX: [], NXT: []}
            new_state[venue] = [*new_state[venue][1 - self.history :], quote]
            new_state["p"] = partition
            self.store[book.symbol] = new_state
        mark = (partition, venue)
        if book.received_at > self.watermarks.get(mark, -1):
            self.watermarks[mark] = book.received_at
        if offset > self.last_offsets.get(mark, -1):
            self.last_offsets[mark] = offset
        self.held[partition].append(Held(book.symbol, venue, quote, partition, wall, token))
        decided = self._release(partition, wall)
        self._trim(recent, partition, NXT if venue == KRX else KRX)
        return decided

    def waiting(self, wall: float) -> set[tuple[int, str]]:
        """(partition, venue) pairs whose end offset would decide a trigger held past settle."""
        out = set()
        for partition, queue in self.held.items():
            if queue and wall - queue[0].since >= self.settle_s:
                out.add((partition, NXT if queue[0].venue == KRX else KRX))
        return out

    def expire(
        self, wall: float, ends: Mapping[tuple[int, str], int] | None = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        """Decide held triggers (called by a timer).

        `ends` are end offsets just read from the broker for `waiting()` pairs: a venue whose
        partition this worker has read to the end has nothing more to say before the trigger.
        """
        out: list[tuple[Any, SpreadOutcome]] = []
        for partition in list(self.held):
            out += self._release(partition, wall, ends)
        return out

    def _recent(self, symbol: str, venue: str) -> deque[list[Any]]:
        recent = self.recent.get((symbol, venue))
        if recent is None:
            state = self.store.get(symbol)
            recent = self.recent[(symbol, venue)] = deque(state[venue] if state else ())
        return recent

    def _trim(self, recent: deque[list[Any]], partition: int, other: str) -> None:
        """Drop quotes no trigger of the other venue can pair with any more.

        Triggers of the other venue still to come are received at or after its watermark
        (each topic partition is written in receive order), held ones at or after the first
        held: only the last quote before that bound and the later ones can still be chosen.
        A cap bounds the memory while the other venue has not been read at all.
        """
        bound = self.watermarks.get((partition, other), -1)
        for held in self.held[partition]:
            if held.venue == other:
                bound = min(bound, held.quote[RECEIVED_AT])
                break
        while len(recent) > 1 and recent[1][RECEIVED_AT] <= bound:
            recent.popleft()
        while len(recent) > MAX_RECENT:
            recent.popleft()

    def _release(
        self, partition: int, wall: float, ends: Mapping[tuple[int, str], int] | None = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        queue = self.held[partition]
        out = []
        while queue:
            held = queue[0]
            if not self._ready(held, wall, ends):
                break
            queue.popleft()
            out.append((held.token, self.decide(held.symbol, held.venue, held.quote)))
        return out

    def _ready(self, held: Held, wall: float, ends: Mapping[tuple[int, str], int] | None) -> bool:
        other = (held.partition, NXT if held.venue == KRX else KRX)
        if self.watermarks.get(other, -1) >= held.quote[RECEIVED_AT]:
            return True  # the other venue has been read past the trigger
        waited = wall - held.since
        if waited >= self.max_wait_s:
            return True
        if waited >= self.settle_s and ends is not None and other in ends:
            return self.last_offsets.get(other, -1) + 1 >= ends[other]  # read to its end
        return False

    def decide(self, symbol: str, venue: str, quote: list[Any]) -> SpreadOutcome:
        """Pair a trigger with the other venue's latest quote received at or before it."""
        other_venue = NXT if venue == KRX else KRX
        other = None
        for candidate in reversed(self._recent(symbol, other_venue)):
            if candidate[RECEIVED_AT] <= quote[RECEIVED_AT]:
                other = candidate
                break
        if other is None:
            return SpreadOutcome(None, f"no {other_venue.lower()} quote before the trigger")
        krx, nxt = (quote, other) if venue == KRX else (other, quote)
        result = spread_record(symbol, venue, krx, nxt, self.max_age_ms)
        if isinstance(result, str):
            return SpreadOutcome(None, result)
        return SpreadOutcome(result)


# ---------------------------------------------------------------------------- the agent


def register(p: Processors) -> None:
    """Add the spread agent (both book topics, one table) and its release timer to the app."""
    settings, stats = p.settings, p.stats["spread"]
    table = p.app.Table("spread_books", default=None, partitions=p.partitions["spread"])
    krx_topic, nxt_topic = p.topology.inputs("spread")
    topic_of = {KRX: krx_topic, NXT: nxt_topic}
    join = SpreadJoin(
        table,
        max_age_ms=settings.spread_max_age_ms,
        history=settings.spread_history,
        max_wait_s=settings.spread_max_wait,
        settle_s=settings.spread_settle,
    )
    out = p.output(topics.SPREAD_KRX_NXT)

    async def finish(decided: list[tuple[Any, SpreadOutcome]]) -> None:
        for event, outcome in decided:
            if outcome.record is None:
                stats.inc(f"not published: {outcome.reason}")
            else:
                await out.send(key=outcome.record["symbol"], value=outcome.record)
                stats.inc("published")
            if event is not None:
                event.ack()  # only now: a held trigger is replayed if the worker dies first

    @p.app.agent(p.raw_input(*p.topology.inputs("spread")), name="spread", concurrency=1)
    async def spread(stream: faust.StreamT[bytes]) -> None:
        # Acknowledged by `finish` once published (see the module docstring).
        async for event in p.events(stream, ack=False):
            stats.inc("consumed")
            record = p.decode("spread", event.value)
            book = book_from(record) if record is not None else "undecodable"
            if isinstance(book, str):
                if record is not None:
                    stats.skip(book, record.get("symbol"))
                event.ack()
                continue
            message = event.message
            decided = join.on_book(
                book,
                offset=message.offset,
                partition=message.partition,
                wall=time.monotonic(),
                token=event,
            )
            await finish(decided)

    @p.app.on_partitions_assigned.connect
    async def on_assigned(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Once per rebalance, before Faust seeks every assigned partition back to its
        # committed offset (so everything held is read again), not on table recovery
        # callbacks, which can come again later without a seek.
        join.reset()

    ends_reader = EndOffsets(settings.kafka_bootstrap)

    @p.app.timer(interval=max(0.01, settings.spread_settle / 2))
    async def spread_release() -> None:
        """Publish the triggers whose other venue is quiet (read to its end) or too slow."""
        if not any(join.held.values()):
            return
        wanted = sorted(join.waiting(time.monotonic()))
        ends: dict[tuple[int, str], int] = {}
        if wanted:
            try:  # the brokers' end offsets now, not the last fetch's (which may be stale)
                found = await asyncio.to_thread(
                    ends_reader.read, [(topic_of[venue], partition) for partition, venue in wanted]
                )
                ends = {pv: end for pv, end in zip(wanted, found, strict=True) if end is not None}
            except Exception as exc:  # broker unreachable: the maximum wait still applies
                stats.skip("end offsets unavailable", exc)
        await finish(join.expire(time.monotonic(), ends))

    @p.app.on_before_shutdown.connect
    async def close_ends_reader(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        ends_reader.close()


class EndOffsets:
    """Reads partitions' end offsets from the brokers on a connection of its own.

    Not through Faust's consumer: its requests queue behind the consumer's long-polling
    fetches (up to 1.5 s each), which slowed down everything when asked often.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Consumer | None = None

    def read(self, tps: list[tuple[str, int]]) -> list[int | None]:
        if self._consumer is None:
            self._consumer = Consumer(
                {"bootstrap.servers": self.bootstrap, "group.id": "kis-stream-end-offsets"}
            )
        out: list[int | None] = []
        for topic, partition in tps:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=2, cached=False
                )
                out.append(high)
            except KafkaException:
                out.append(None)
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
