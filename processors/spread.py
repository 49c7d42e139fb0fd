"""KRX-vs-NXT mid-price spread per symbol (`kis.spread.krx_nxt`).

Faust has no joins: one agent reads both book topics (co-partitioned by symbol: checked at
start-up) and keeps each venue's level-1 quotes per symbol in a table. Every update of either
venue (the trigger) is paired with the other venue's latest quote *received at or before the
trigger* (an as-of join on the producer's receive time), unless a side is empty or the pair
is further apart than the staleness bound.

Why as-of and not "whatever the other side's latest is when the agent gets here": the agent
sees the two topics interleaved in fetch-batch order, which differs from run to run, between
one worker and two, and after a restart. To pair on receive time the agent holds a trigger
until the other venue's partition has been read past the trigger's receive time (its
watermark), or has been read to its end and `PROCESSORS_SPREAD_SETTLE` has passed (a quiet
venue), or, as a last resort, `PROCESSORS_SPREAD_MAX_WAIT` has passed. Held events are
acknowledged only once published, in offset order, so a crash replays them.

Replays: after a crash or a hand-over the two topics are read again from their committed
offsets, which Faust commits independently and which can be far apart (one topic fetched
ahead of the other), while the table comes back from its changelog as it was at the crash.
A replayed trigger must find the same quote again, so the table keeps every quote that a
trigger at or after the other topic's committed offset can pair with (see `SpreadJoin`).

Ages are measured on the producer's receive times (microseconds), not on the books' HHMMSS
stamps (whole seconds only) and never on the processor's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from itertools import islice, pairwise
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition
from faust.types import TP

from kis_stream import topics
from kis_stream.logging import RepeatFilter
from processors import broker_outage, faust_fixes
from processors.codec import WireError
from processors.inputs import INT_OR_NONE, Book, as_int, envelope_problem
from processors.spread_marks import MarkReader, MarkView, ProducerMarks
from processors.table_writes import TableWriter

if TYPE_CHECKING:
    from processors.app import Processors

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter(30.0))  # (a failing release tick would log every 10 ms)

KRX, NXT = "KRX", "NXT"
BID, ASK, BID_QTY, ASK_QTY, EVENT_TIME, RECEIVED_AT, SRC = range(7)
ORDER_SLACK_US = 100_000
"""Margin for receive times out of order within a partition (two WebSocket sessions)."""
_RECEIVED_AT = itemgetter(RECEIVED_AT)
_SRC = itemgetter(SRC)
_FIRST = itemgetter(0)
TIDY_EVERY_S, TIDY_PAIRS, TIDY_QUOTES = 0.02, 256, 200
"""How often and how much `SpreadJoin.tidy` prunes while nothing is held."""
PRUNE_EVERY = 32
"""The agent prunes a symbol and venue's quotes on every 32nd new one (and `tidy` in idle
time): pruning on each quote cost a tenth of the worker's time (docs/benchmarks.md)."""


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


def quote_from_values(values: tuple[Any, ...], offset: int) -> list[Any] | str:
    """`quote_of(book_from_values(...))` from the values of `inputs.QUOTE_COLUMNS` (a decoder's
    `values`), or why the record is not a book: the same checks, without the levels the
    spread does not read."""
    symbol, venue, event_time, received_at, bid, ask, bid_qty, ask_qty = values
    problem = envelope_problem(symbol, venue, received_at)
    if problem is not None:
        return problem
    level1 = (bid, ask, bid_qty, ask_qty)
    if not INT_OR_NONE.issuperset(map(type, level1)):  # (from the Avro decoder: never)
        bid, ask, bid_qty, ask_qty = (as_int(v) for v in level1)
    return [bid, ask, bid_qty, ask_qty, as_int(event_time), received_at, offset]


def quote_empty(quote: list[Any]) -> bool:
    """A side without a positive price and quantity at level 1 (auction, halt, VI)."""
    bid, ask, bid_qty, ask_qty = quote[BID], quote[ASK], quote[BID_QTY], quote[ASK_QTY]
    return (
        bid is None
        or bid <= 0
        or ask is None
        or ask <= 0
        or bid_qty is None
        or bid_qty <= 0
        or ask_qty is None
        or ask_qty <= 0
    )


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
    """A trigger waiting for the other venue's watermark (or an input already decided)."""

    symbol: str
    venue: str
    quote: list[Any]
    partition: int
    since: float
    token: Any
    """What the caller needs back with the outcome (the Faust event to acknowledge)."""
    outcome: SpreadOutcome | None = None
    """Set for an input decided on arrival (not a book): released in turn, never earlier."""


class StoreWriter(Protocol):
    """Writes of the join's store: to the changelog too (`set`, `delete`), in the partition
    of the input the quote came from, or to this worker's copy only (`*_local`)."""

    def set(self, partition: int, key: str, value: Any) -> None: ...

    def delete(self, partition: int, key: str) -> bool: ...

    def set_local(self, key: str, value: Any) -> None: ...

    def delete_local(self, key: str) -> None: ...


class MappingWriter:
    """A `StoreWriter` for a plain mapping (no changelog: local and logged writes agree)."""

    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self.store = store

    def set(self, partition: int, key: str, value: Any) -> None:
        self.store[key] = value

    def delete(self, partition: int, key: str) -> bool:
        return self.store.pop(key, _GONE) is not _GONE

    def set_local(self, key: str, value: Any) -> None:
        self.store[key] = value

    def delete_local(self, key: str) -> None:
        self.store.pop(key, None)


_GONE = object()
Committed = Callable[[int, str], "int | None"]
"""(partition, venue) -> the offset committed for that venue's topic partition, if known."""


def quote_key(symbol: str, venue: str, offset: int) -> str:
    """Table key of one quote: `symbol|venue|source offset`."""
    return f"{symbol}|{venue}|{offset}"


def latest_quotes(store: Mapping[str, Any], symbol: str) -> dict[str, list[Any] | None] | None:
    """Each venue's latest quote of a symbol held in the table (the web view), or None."""
    latest: dict[str, list[Any] | None] = {KRX: None, NXT: None}
    prefix = symbol + "|"
    for key, quote in store.items():
        if isinstance(key, str) and key.startswith(prefix) and isinstance(quote, list):
            venue = key.split("|")[1]
            mine = latest.get(venue)
            if venue in latest and (mine is None or quote[SRC] > mine[SRC]):
                latest[venue] = quote
    return latest if any(latest.values()) else None


class SpreadJoin:
    """As-of join of KRX and NXT quotes on receive time, over a key-value store.

    The store (the changelog-backed table) holds one entry per quote, `symbol|venue|offset`,
    in memory indexed per symbol and venue in source-offset order. A quote is added only
    from a later source offset, so a replay leaves the state as it was.

    A quote is removed only once no trigger of the other venue that could still be
    processed, or processed again after a crash, can pair with it: such triggers are at or
    after the other topic partition's committed offset (offsets this worker saw committed;
    `committed`), so they are received at or after the first uncommitted record read from
    it, or, if every record read is committed, at or after what the partition is known to
    hold (its watermark, or the time up to which it was found read to its end). Of the quotes
    received before that bound only the last is kept. The table therefore holds what a
    replay from the committed offsets needs, however far one topic was read ahead of the
    other (a fixed-length history did not: issue 6, missed pairings after a hand-over).

    The changelog holds less than this worker's copy: a quote is written to it only when
    Faust is about to commit its own topic past it (`before_commit`), and only if a trigger
    at or after the other topic's offset being committed could pair with it; a quote at or
    after its own topic's committed offset is read again by a replay, which puts back what
    the restored table lacks (`on_quote` inserts it by offset). Most quotes are deleted
    before they are ever written: 0.15-0.4 changelog records per input in the bench instead
    of two (a write and a tombstone; docs/benchmarks.md, session 9).

    In memory, rebuilt after each rebalance: per partition and venue the watermark, the
    uncommitted offsets read, the held triggers.
    """

    def __init__(
        self,
        store: MutableMapping[str, Any],
        *,
        max_age_ms: float,
        max_wait_s: float = 60.0,
        settle_s: float = 0.1,
        committed: Committed | None = None,
        marks: Callable[[], MarkView | None] | None = None,
        venue_topics: Mapping[str, str] | None = None,
        writer: StoreWriter | None = None,
        prune_every: int = 1,
    ) -> None:
        """``marks``: the live producers' receive marks (`ProducerMarks.view`), which decide
        a held trigger as soon as they cover it; ``venue_topics``: each venue's topic, as
        named in the marks; ``writer``: how the store is written, in the partition of the
        quote's input (`table_writes.TableWriter` for a Faust table; by default the store
        itself); ``prune_every``: a symbol and venue's quotes are pruned on every n-th new
        quote (pruning later only keeps more: never a pairing less), and by `tidy`."""
        self.store = store
        self.writer: StoreWriter = writer or MappingWriter(store)
        self.marks: Callable[[], MarkView | None] = marks or (lambda: None)
        self.released: Counter[str] = Counter()
        """Held triggers decided, by the rule that released them (shown with the counters)."""
        self.venue_topics = dict(venue_topics or {})
        self.max_age_ms = max_age_ms
        self.max_wait_s = max_wait_s
        self.settle_s = settle_s
        self.committed: Committed = committed or (lambda partition, venue: None)
        self.watermarks: dict[tuple[int, str], int] = {}
        self.quiet: dict[tuple[int, str], int] = {}
        self.known_ends: dict[tuple[int, str], int] = {}
        """The last end offset read from the broker per partition and venue."""
        """Receive time up to which a venue's partition was found read to its end."""
        self.last_offsets: dict[tuple[int, str], int] = {}
        self.uncommitted: dict[tuple[int, str], deque[tuple[int, int]]] = defaultdict(deque)
        """(offset, received_at) of the records read and not yet seen committed."""
        self.held: dict[int, deque[Held]] = defaultdict(deque)
        self.held_times: dict[tuple[int, str], deque[int]] = defaultdict(deque)
        """Per partition and venue, the receive times of the held triggers, in order."""
        self.quotes: dict[tuple[str, str], deque[list[Any]]] = {}
        self.unwritten: dict[tuple[str, str], dict[int, int]] = {}
        """(symbol, venue) -> {offset: partition} of the quotes not in the changelog."""
        self.untidy: dict[tuple[str, str], int] = {}
        """(symbol, venue) -> partition: pairs whose last prune left older quotes (`tidy`)."""
        self.disordered: set[tuple[str, str]] = set()
        """(symbol, venue) pairs whose indexed quotes' receive times do not rise with offsets."""
        self.prune_every = prune_every
        self._prune_at: dict[tuple[str, str], int] = {}
        """(symbol, venue) -> the length of its quotes at which `on_quote` prunes next."""
        self._view: MarkView | None = None
        self._view_at = float("nan")
        """The marks' view as asked for at that wall time (a mark stays true once made)."""
        self.loaded = False

    def reset(self) -> None:
        """Forget the in-memory view after a rebalance: the table is the truth again.

        Held triggers are dropped unpublished and unacknowledged: their offsets were not
        committed, so after the rebalance they are read again (by this worker or another).
        Quotes never written to the changelog leave the table, which is then what a worker
        recovering it would find, and come back as unwritten when read again. The quote index
        is rebuilt from the table (recovered by then) on the next input.
        """
        for (symbol, venue), offsets in self.unwritten.items():
            for offset in offsets:
                self.writer.delete_local(quote_key(symbol, venue, offset))
        self.unwritten.clear()
        self.watermarks.clear()
        self.quiet.clear()
        self.known_ends.clear()
        self.last_offsets.clear()
        self.uncommitted.clear()
        self.held.clear()
        self.held_times.clear()
        self.quotes.clear()
        self.untidy.clear()
        self.disordered.clear()
        self._prune_at.clear()
        self.loaded = False

    def reload(self) -> None:
        """Index the table again on next use (its recovery from the changelog completed).

        An event handled between an assignment and the end of the table's recovery would
        otherwise have indexed a partly recovered table for the whole generation.
        """
        self.quotes.clear()
        self.untidy.clear()
        self.disordered.clear()
        self._prune_at.clear()
        self.loaded = False

    def on_book(
        self, book: Book, *, offset: int, partition: int, wall: float, token: Any = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        """Record a book update; the outcomes of every trigger that can be decided now."""
        quote = quote_of(book, offset)
        symbol, venue = book.symbol, book.venue
        return self.on_quote(
            symbol, venue, quote, offset=offset, partition=partition, wall=wall, token=token
        )

    def on_quote(
        self,
        symbol: str,
        venue: str,
        quote: list[Any],
        *,
        offset: int,
        partition: int,
        wall: float,
        token: Any = None,
    ) -> list[tuple[Any, SpreadOutcome]]:
        """`on_book` of a book's level-1 quote (`quote_of`, `quote_from_values`)."""
        if venue not in (KRX, NXT):
            return self.skip(partition, "not a KRX or NXT book", wall=wall, token=token)
        received_at = quote[RECEIVED_AT]
        quotes = self._quotes(symbol, venue)
        if not quotes or offset > quotes[-1][SRC]:
            if quotes and received_at < quotes[-1][RECEIVED_AT]:
                self.disordered.add((symbol, venue))
            quotes.append(quote)
            self._keep(symbol, venue, quote, partition)
        else:
            self._insert(symbol, venue, quotes, quote, partition)
        mark = (partition, venue)
        if received_at > self.watermarks.get(mark, -1):
            self.watermarks[mark] = received_at
        if offset > self.last_offsets.get(mark, -1):
            self.last_offsets[mark] = offset
            self.uncommitted[mark].append((offset, received_at))
        self.held[partition].append(Held(symbol, venue, quote, partition, wall, token))
        self.held_times[mark].append(received_at)
        decided = self._release(partition, wall)
        if self.prune_every == 1:
            self._prune(symbol, venue, partition)
        else:
            pair = (symbol, venue)
            if len(quotes) >= self._prune_at.get(pair, 0):
                self._prune(symbol, venue, partition)
                self._prune_at[pair] = len(quotes) + self.prune_every
            elif len(quotes) > 1 and pair not in self.untidy:
                self.untidy[pair] = partition  # (for `tidy`, in idle time)
        return decided

    def _keep(self, symbol: str, venue: str, quote: list[Any], partition: int) -> None:
        """Put a new quote in this worker's table; the changelog gets it in `before_commit`."""
        offset = quote[SRC]
        self.writer.set_local(quote_key(symbol, venue, offset), quote)
        unwritten = self.unwritten.get((symbol, venue))
        if unwritten is None:
            unwritten = self.unwritten[(symbol, venue)] = {}
        unwritten[offset] = partition

    def _insert(
        self, symbol: str, venue: str, quotes: deque[list[Any]], quote: list[Any], partition: int
    ) -> None:
        """A replayed quote: put back in offset order if the restored table lacks it (it was
        not written to the changelog), else nothing (the table has it already)."""
        offset = quote[SRC]
        at = bisect_left(quotes, offset, key=_SRC)
        if at < len(quotes) and quotes[at][SRC] == offset:
            return
        quotes.insert(at, quote)
        received_at = quote[RECEIVED_AT]
        if (at > 0 and quotes[at - 1][RECEIVED_AT] > received_at) or (
            quotes[at + 1][RECEIVED_AT] < received_at
        ):
            self.disordered.add((symbol, venue))
        self._keep(symbol, venue, quote, partition)

    def before_commit(self, offsets: Mapping[tuple[int, str], int]) -> int:
        """Write to the changelog the quotes a replay from `offsets` (partition, venue ->
        the offset Faust is about to commit) would need and not read again; how many.

        Called before the offsets are committed: if the commit fails, the last committed
        offsets stand, and what they need was written before them. Of the unwritten quotes of
        a venue below its offset, those a trigger of the other venue at or after its offset
        could pair with (by `replay_bound` for that offset, the prune's rule) are written;
        the others are left for the prune to drop (they are needed by no later commit).
        """
        written = 0
        for (symbol, venue), unwritten in list(self.unwritten.items()):
            if not unwritten:
                del self.unwritten[(symbol, venue)]
                continue
            partition = next(iter(unwritten.values()))
            until = offsets.get((partition, venue))
            if until is None:
                until = self.committed(partition, venue)
                if until is None:
                    continue
            other = NXT if venue == KRX else KRX
            other_offset = offsets.get((partition, other))
            bound = self.replay_bound(partition, other, other_offset)
            quotes = self._quotes(symbol, venue)
            start = self._first_kept(symbol, venue, quotes, bound)
            for quote in islice(quotes, start, None):  # (a deque: indexing is not O(1))
                offset = quote[SRC]
                if offset >= until:
                    break
                if unwritten.pop(offset, None) is not None:
                    self.writer.set(partition, quote_key(symbol, venue, offset), quote)
                    written += 1
        return written

    def _first_kept(self, symbol: str, venue: str, quotes: deque[list[Any]], bound: int) -> int:
        """Index of the first quote a prune by `bound` would keep."""
        if bound < 0 or len(quotes) < 2:
            return 0
        if (symbol, venue) not in self.disordered:
            return max(bisect_right(quotes, bound, key=_RECEIVED_AT) - 1, 0)
        at = 0
        while at + 1 < len(quotes) and quotes[at + 1][RECEIVED_AT] <= bound:
            at += 1
        return at

    def skip(
        self, partition: int, reason: str | None, *, wall: float, token: Any = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        """An input that is not a usable book: decided now, released after earlier triggers.

        Acknowledging it before a held trigger of the same partition would let Faust commit
        past the held one (faust-streaming #606: a single unacknowledged offset at the head
        is committed over), and a crash would then lose it.
        """
        held = Held("", "", [], partition, wall, token, SpreadOutcome(None, reason))
        self.held[partition].append(held)
        return self._release(partition, wall)

    def waiting(self, wall: float) -> set[tuple[int, str]]:
        """(partition, venue) pairs whose end offset would decide a held trigger: held past
        the settle time without marks, or covered by the marks' watermark while no live
        producer wrote that partition (then everything in it so far is before the trigger)."""
        out = set()
        view = self.marks()
        for partition, queue in self.held.items():
            if not queue or queue[0].outcome is not None:
                continue
            head = queue[0]
            other = NXT if head.venue == KRX else KRX
            if view is None:
                if wall - head.since >= self.settle_s:
                    out.add((partition, other))
            elif view.watermark >= head.quote[RECEIVED_AT] and (
                (self.venue_topics.get(other), partition) not in view.offsets
            ):
                out.add((partition, other))
        return out

    def held_partitions(self) -> set[tuple[int, str]]:
        """(partition, venue) pairs of the other venue of every partition holding triggers."""
        return {(p, v) for p, queue in self.held.items() if queue for v in (KRX, NXT)}

    def expire(
        self,
        wall: float,
        ends: Mapping[tuple[int, str], int] | None = None,
        starts: Mapping[tuple[int, str], int] | None = None,
    ) -> list[tuple[Any, SpreadOutcome]]:
        """Decide held triggers (called by a timer).

        `ends` are end offsets just read from the broker for `waiting()` pairs: a venue whose
        partition this worker has read to the end has nothing more to say before the trigger.
        `starts` are the offsets reading resumed from after the last assignment (the
        committed offsets then): a partition committed to its end before a restart counts as
        read to its end without a record read since.
        """
        if starts:
            for mark, start in starts.items():
                if start - 1 > self.last_offsets.get(mark, -1):
                    self.last_offsets[mark] = start - 1
        if ends:
            self.known_ends.update(ends)
        out: list[tuple[Any, SpreadOutcome]] = []
        for partition in list(self.held):
            out += self._release(partition, wall, ends)
        return out

    def _load(self) -> None:
        """Index the quotes of the table (after a rebalance: recovered from the changelog)."""
        found: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
        for key, quote in self.store.items():
            parts = key.split("|") if isinstance(key, str) else ()
            if len(parts) == 3 and parts[1] in (KRX, NXT) and isinstance(quote, list):
                found[(parts[0], parts[1])].append(quote)
        self.quotes = {
            sv: deque(sorted(quotes, key=lambda q: int(q[SRC]))) for sv, quotes in found.items()
        }
        self.disordered = {
            sv
            for sv, quotes in self.quotes.items()
            if any(a[RECEIVED_AT] > b[RECEIVED_AT] for a, b in pairwise(quotes))
        }
        self.loaded = True

    def _quotes(self, symbol: str, venue: str) -> deque[list[Any]]:
        if not self.loaded:
            self._load()
        quotes = self.quotes.get((symbol, venue))
        if quotes is None:
            quotes = self.quotes[(symbol, venue)] = deque()
        return quotes

    def replay_bound(self, partition: int, venue: str, committing: int | None = None) -> int:
        """Receive time at or after which every trigger of `venue` still to come (or to come
        again after a crash) in this partition is received; -1 if unknown. ``committing``:
        as if that offset were committed (not yet known to be)."""
        mark = (partition, venue)
        known = self.watermarks.get(mark, -1)
        quiet = self.quiet.get(mark, -1)
        if quiet > known:
            known = quiet
        if known < 0:
            return -1
        pending = self.uncommitted.get(mark)
        if pending:
            committed = self.committed(partition, venue)
            if committed is not None:
                while pending and pending[0][0] < committed:
                    pending.popleft()
            if committing is not None and (committed is None or committing > committed):
                at = bisect_left(pending, committing, key=_FIRST)
                if at < len(pending):
                    known = min(known, pending[at][1])
            elif pending:
                known = min(known, pending[0][1])
        held = self.held_times.get(mark)
        if held:
            known = min(known, held[0])
        return known - ORDER_SLACK_US

    def _prune(self, symbol: str, venue: str, partition: int, limit: int | None = None) -> int:
        """Drop this venue's quotes of the symbol that no trigger of the other can pair with
        (at most `limit`); how many were dropped."""
        quotes = self._quotes(symbol, venue)
        key = (symbol, venue)
        if len(quotes) < 2:
            self.untidy.pop(key, None)
            return 0
        bound = self.replay_bound(partition, NXT if venue == KRX else KRX)
        dropped = 0
        while len(quotes) > 1 and quotes[1][RECEIVED_AT] <= bound:
            if limit is not None and dropped >= limit:
                break
            old = quotes.popleft()
            offset = old[SRC]
            unwritten = self.unwritten.get(key)
            if unwritten and unwritten.pop(offset, None) is not None:
                self.writer.delete_local(quote_key(symbol, venue, offset))
            else:
                self.writer.delete(partition, quote_key(symbol, venue, offset))
            dropped += 1
        self.untidy.pop(key, None)
        if len(quotes) > 1:
            self.untidy[key] = partition  # (again: at the end of the round)
        else:
            self.disordered.discard(key)
        return dropped

    def tidy(self, max_pairs: int = TIDY_PAIRS, max_quotes: int = TIDY_QUOTES) -> int:
        """Prune symbols whose last prune left older quotes (called by the timer while no
        trigger is held); how many quotes were dropped.

        A quote is pruned when a later quote of its symbol and venue arrives, by the bound of
        that moment, which lags while the other topic's commits lag. After a backlog, every
        symbol kept the quotes of the last commit interval (thousands), and the first update
        of each after it dropped them, with a changelog record per quote, in the way of the
        first live updates (the spread's latency tail after a backlog, docs/benchmarks.md).
        Here they go in idle time, a bounded amount per call, by the same rule.
        """
        if not self.loaded:
            return 0
        dropped = 0
        for _ in range(min(max_pairs, len(self.untidy))):
            if dropped >= max_quotes:
                break
            (symbol, venue), partition = next(iter(self.untidy.items()))
            dropped += self._prune(symbol, venue, partition, max_quotes - dropped)
        return dropped

    def _release(
        self, partition: int, wall: float, ends: Mapping[tuple[int, str], int] | None = None
    ) -> list[tuple[Any, SpreadOutcome]]:
        queue = self.held[partition]
        out = []
        view: MarkView | None = None
        asked = False  # the marks are asked for only when a trigger waits
        while queue:
            held = queue[0]
            if held.outcome is not None:
                queue.popleft()
                out.append((held.token, held.outcome))
                continue
            if not asked:  # (once per wall time: the agent passes one per delivered batch)
                if wall != self._view_at:
                    self._view, self._view_at = self.marks(), wall
                view, asked = self._view, True
            if not self._ready(held, wall, ends, view):
                break
            queue.popleft()
            self.held_times[(partition, held.venue)].popleft()  # released in order
            out.append((held.token, self.decide(held.symbol, held.venue, held.quote)))
        return out

    def _ready(
        self,
        held: Held,
        wall: float,
        ends: Mapping[tuple[int, str], int] | None,
        view: MarkView | None,
    ) -> bool:
        other = (held.partition, NXT if held.venue == KRX else KRX)
        received_at = held.quote[RECEIVED_AT]
        if self.watermarks.get(other, -1) > received_at:
            # The other venue has been read past the trigger (strictly: a frame of several
            # records shares one receive time, and the trigger pairs with the last of them).
            return True
        waited = wall - held.since
        if waited >= self.max_wait_s and not self._known_behind(other):
            self.released["max wait"] += 1
            return True  # last resort: nothing says the other venue has more to read
        if view is not None:
            # The producers' marks: once every live producer has everything received up to
            # the trigger on the broker, the other venue's partition holds all of its quotes
            # before the trigger below their next offset (or below its end offset, read after
            # the marks, if no live producer wrote it).
            if view.watermark < received_at:
                return False
            target = view.offsets.get((self.venue_topics.get(other[1], ""), other[0]))
            if target is None:
                target = ends.get(other) if ends is not None else None
                if target is None:
                    return False
            if self.last_offsets.get(other, -1) + 1 < target:
                return False
            self.quiet[other] = max(self.quiet.get(other, -1), received_at)
            self.released["marks"] += 1
            return True
        if waited < self.settle_s or ends is None or other not in ends:
            return False
        if self.last_offsets.get(other, -1) + 1 < ends[other]:
            return False
        # Read to its end: what the other venue writes from now on is received after this.
        self.quiet[other] = max(self.quiet.get(other, -1), received_at)
        self.released["settle"] += 1
        return True

    def _known_behind(self, mark: tuple[int, str]) -> bool:
        """Whether the broker said this partition has records this worker has not read.

        Then the maximum wait does not apply: a worker catching up on a backlog keeps holding
        the trigger until the other venue is read past it (pairing early would pair wrongly).
        """
        end = self.known_ends.get(mark)
        return end is not None and self.last_offsets.get(mark, -1) + 1 < end

    def _as_of(self, symbol: str, venue: str, received_at: int) -> list[Any] | None:
        """The latest quote (by source offset) of this venue received at or before then.

        The quotes' receive times rise with their offsets except across WebSocket sessions
        (`ORDER_SLACK_US`); while they do, a binary search finds it (the other venue can have
        been read far past the trigger: a linear walk back was a tenth of the worker's CPU);
        otherwise the walk back from the latest.
        """
        quotes = self._quotes(symbol, venue)
        if not quotes:
            return None
        latest = quotes[-1]
        if latest[RECEIVED_AT] <= received_at:  # (the usual case: also first walking back)
            return latest
        if (symbol, venue) not in self.disordered:
            at = bisect_right(quotes, received_at, key=_RECEIVED_AT)
            return quotes[at - 1] if at else None
        for candidate in reversed(quotes):
            if candidate[RECEIVED_AT] <= received_at:
                return candidate
        return None

    def decide(self, symbol: str, venue: str, quote: list[Any]) -> SpreadOutcome:
        """Pair a trigger with the other venue's latest quote received at or before it."""
        other_venue = NXT if venue == KRX else KRX
        other = self._as_of(symbol, other_venue, quote[RECEIVED_AT])
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

    tps: dict[tuple[int, str], TP] = {}

    def committed(partition: int, venue: str) -> int | None:
        tp = tps.get((partition, venue))
        if tp is None:
            tp = tps[(partition, venue)] = TP(topic_of[venue], partition)
        return faust_fixes.committed_offset(p.app, tp)

    producer_marks = ProducerMarks(topic_of.values(), timeout_s=settings.spread_mark_timeout)
    mark_reader = None
    if settings.spread_marks:
        marks_topic = topics.marks_topic(p.topology.prefix)
        mark_reader = MarkReader(settings.kafka_client_config(), marks_topic, producer_marks)

    join = SpreadJoin(
        table,
        max_age_ms=settings.spread_max_age_ms,
        max_wait_s=settings.spread_max_wait,
        settle_s=settings.spread_settle,
        committed=committed,
        marks=producer_marks.view if mark_reader is not None else None,
        venue_topics=topic_of,
        writer=TableWriter(table),
        prune_every=PRUNE_EVERY,
    )
    venue_of = {topic: venue for venue, topic in topic_of.items()}

    def write_needed_quotes(offsets: Mapping[TP, int]) -> None:
        written = join.before_commit(
            {
                (tp.partition, venue_of[tp.topic]): o
                for tp, o in offsets.items()
                if tp.topic in venue_of
            }
        )
        stats.inc("quotes written to the changelog", written)

    faust_fixes.before_commit(p.app, write_needed_quotes)
    out = p.output(topics.SPREAD_KRX_NXT)
    in_order = asyncio.Lock()

    async def finish(decided: list[tuple[Any, SpreadOutcome]]) -> None:
        # The agent and the release timer both publish; the lock keeps the acknowledgements
        # of each partition in offset order (decisions leave the join in that order), so
        # that Faust never commits past an event still unpublished (faust-streaming #606).
        async with in_order:
            for event, outcome in decided:
                if outcome.record is None:
                    if outcome.reason is not None:  # (None: already counted as skipped)
                        stats.inc(f"not published: {outcome.reason}")
                else:
                    await out.send(key=outcome.record["symbol"], value=outcome.record)
                    stats.inc("published")
                if event is not None:
                    event.ack()  # only now: a held trigger is replayed if the worker dies

    @p.app.agent(p.raw_input(*p.topology.inputs("spread")), name="spread", concurrency=1)
    async def spread(stream: faust.StreamT[bytes]) -> None:
        # Acknowledged by `finish` once published (see the module docstring). A delivered
        # batch is joined at once and its decisions published together.
        values_of = p.decoders["spread"].values
        async for events in p.event_batches(stream):
            wall = time.monotonic()
            decided: list[tuple[Any, SpreadOutcome]] = []
            for event in events:
                message = event.message
                try:
                    values = values_of(message.value)
                except WireError as exc:
                    stats.skip("undecodable", exc)
                    decided += join.skip(message.partition, None, wall=wall, token=event)
                    continue
                offset = message.offset
                quote = quote_from_values(values, offset)
                if isinstance(quote, str):
                    stats.skip(quote, values[0])  # (the symbol)
                    decided += join.skip(message.partition, None, wall=wall, token=event)
                    continue
                decided += join.on_quote(
                    values[0],
                    values[1],
                    quote,
                    offset=offset,
                    partition=message.partition,
                    wall=wall,
                    token=event,
                )
            stats.inc("consumed", len(events))
            await finish(decided)

    recovered = table.on_recovery_completed

    async def on_recovery_completed(active_tps: Any, standby_tps: Any) -> None:
        await recovered(active_tps, standby_tps)
        join.reload()

    table.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]

    @p.app.on_partitions_assigned.connect
    async def on_assigned(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Once per rebalance, before Faust seeks every assigned partition back to its
        # committed offset (so everything held is read again), not on table recovery
        # callbacks, which can come again later without a seek.
        join.reset()

    ends_reader = EndOffsets(settings.kafka_client_config())

    @p.app.task
    async def start_mark_reader() -> None:
        """Read the receive marks once the worker runs (not when the app is only built)."""
        if mark_reader is not None:
            mark_reader.start()

    tidied = [0.0]  # when the release timer last ran `join.tidy`

    @p.app.task
    async def spread_release_loop() -> None:
        await release_loop(spread_release, settings.spread_clock, producer_marks)

    async def spread_release() -> None:
        """Publish the triggers the producers' marks cover, or whose other venue is quiet
        (read to its end) or too slow."""
        if not any(join.held.values()):
            now = time.monotonic()
            if now >= tidied[0] + TIDY_EVERY_S:
                tidied[0] = now
                join.tidy()
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
        starts: dict[tuple[int, str], int] = {}
        for partition, venue in join.held_partitions():  # where reading resumed after the
            start = faust_fixes.sought_offset(p.app, TP(topic_of[venue], partition))  # last
            if start is not None:  # assignment
                starts[(partition, venue)] = start
        await finish(join.expire(time.monotonic(), ends, starts))
        for rule, n in join.released.items():
            stats.counts[f"released by {rule}"] = n
        view = producer_marks.view()
        stats.counts["producers with live marks"] = view.producers if view is not None else 0

    @p.app.on_before_shutdown.connect
    async def close_ends_reader(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        ends_reader.close()
        if mark_reader is not None and mark_reader.started:
            mark_reader.close()


async def release_loop(
    release: Callable[[], Awaitable[None]], interval_s: float, marks: ProducerMarks
) -> None:
    """Run `release` every `interval_s` (`PROCESSORS_SPREAD_CLOCK`), and at once when a new
    receive mark arrives: the marks decide most held triggers whose other venue is quiet, and
    waiting for the next tick added up to the interval to their latency. A failing call is
    logged (at most every 30 s) and the loop goes on."""
    loop = asyncio.get_running_loop()
    marked = asyncio.Event()

    def wake() -> None:  # (on the marks' reader thread)
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker stops
            loop.call_soon_threadsafe(marked.set)

    marks.on_update = wake
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await marked.wait()
            marked.clear()
            try:
                await release()
            except Exception:
                log.exception("releasing held spread triggers failed; trying again")
    finally:
        marks.on_update = None


class EndOffsets:
    """Reads partitions' end offsets from the brokers on a connection of its own.

    Not through Faust's consumer: its requests queue behind the consumer's long-polling
    fetches (up to 1.5 s each), which slowed down everything when asked often.
    """

    def __init__(self, client_config: dict[str, str]) -> None:
        """``client_config``: librdkafka properties with the broker and its security settings."""
        self._config = {**client_config, "group.id": "kis-stream-end-offsets"}
        self._consumer: Consumer | None = None

    def read(self, tps: list[tuple[str, int]]) -> list[int | None]:
        if self._consumer is None:
            self._consumer = Consumer(self._config, logger=broker_outage.LIBRDKAFKA)
        out: list[int | None] = []
        for topic, partition in tps:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=2, cached=False
                )
                out.append(high)
            except KafkaException:
                out.append(None)
        self._consumer.poll(0)  # hands librdkafka's log lines to the logger
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
