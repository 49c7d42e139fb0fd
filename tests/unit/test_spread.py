"""KRX-vs-NXT spread: the pairing rules, the start-up partition check, then the agent."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest

from processors.inputs import Book, book_from
from processors.spread import (
    SRC,
    MappingWriter,
    SpreadJoin,
    SpreadOutcome,
    quote_of,
    spread_record,
)
from processors.topology import TopologyError, stream_partitions


def book(venue: str, bid: int, ask: int, received_at: int, qty: int = 10) -> Book:
    result = book_from(
        {
            "symbol": "005930",
            "venue": venue,
            "received_at": received_at,
            "event_time": received_at // 1000,
            "bidp1": bid,
            "askp1": ask,
            "bidp_rsqn1": qty,
            "askp_rsqn1": qty,
        }
    )
    assert isinstance(result, Book)
    return result


class Pairing:
    """Drives a SpreadJoin; every decision is released at once unless `hold` is set."""

    def __init__(self, max_age_ms: float = 1_000, hold: bool = False) -> None:
        self.store: dict[str, Any] = {}
        self.committed: dict[str, int] = {}
        """Per venue, the offset committed (as Faust would after acknowledgements)."""
        self.join = SpreadJoin(
            self.store,
            max_age_ms=max_age_ms,
            max_wait_s=1,
            settle_s=0.5,
            committed=lambda partition, venue: self.committed.get(venue),
        )
        self.offsets = {"KRX": 0, "NXT": 0}
        self.hold = hold
        self.records: list[dict[str, Any]] = []
        self.reasons: list[str | None] = []
        self.decided: list[Any] = []

    def feed(self, b: Book, offset: int | None = None, wall: float = 0.0) -> None:
        if offset is None:
            offset = self.offsets[b.venue]
            self.offsets[b.venue] += 1
        token = (b.venue, b.received_at)
        self._take(self.join.on_book(b, offset=offset, partition=0, wall=wall, token=token))
        if not self.hold:
            self.flush()

    def flush(self, wall: float = 100.0, ends: dict[tuple[int, str], int] | None = None) -> None:
        self._take(self.join.expire(wall, ends))

    def _take(self, decided: list[tuple[Any, SpreadOutcome]]) -> None:
        for token, outcome in decided:
            self.decided.append(token)
            self.reasons.append(outcome.reason)
            if outcome.record is not None:
                self.records.append(outcome.record)


def test_each_update_pairs_with_the_other_venues_quote_as_of_its_receive_time() -> None:
    pairing = Pairing()
    pairing.feed(book("KRX", 70_000, 70_100, received_at=1_000_000))
    assert pairing.reasons == ["no nxt quote before the trigger"]
    pairing.feed(book("NXT", 70_050, 70_150, received_at=1_200_000))
    pairing.feed(book("KRX", 70_100, 70_200, received_at=1_300_000))
    assert pairing.records == [
        {
            "symbol": "005930",
            "trigger_venue": "NXT",
            "krx_bid": 70_000,
            "krx_ask": 70_100,
            "krx_mid": 70_050.0,
            "nxt_bid": 70_050,
            "nxt_ask": 70_150,
            "nxt_mid": 70_100.0,
            "spread_krw": 50.0,
            "spread_bps": 50 / 70_050 * 10_000,
            "age_ms": 200.0,
            "crossed": False,
            "krx_event_time": 1_000,
            "nxt_event_time": 1_200,
            "krx_received_at": 1_000_000,
            "nxt_received_at": 1_200_000,
        },
        {
            "symbol": "005930",
            "trigger_venue": "KRX",
            "krx_bid": 70_100,
            "krx_ask": 70_200,
            "krx_mid": 70_150.0,
            "nxt_bid": 70_050,
            "nxt_ask": 70_150,
            "nxt_mid": 70_100.0,
            "spread_krw": -50.0,
            "spread_bps": -50 / 70_150 * 10_000,
            "age_ms": 100.0,
            "crossed": False,
            "krx_event_time": 1_300,
            "nxt_event_time": 1_200,
            "krx_received_at": 1_300_000,
            "nxt_received_at": 1_200_000,
        },
    ]


def test_a_trigger_waits_for_the_other_topics_watermark() -> None:
    pairing = Pairing(hold=True)
    pairing.feed(book("KRX", 100, 102, received_at=10), wall=0.0)
    assert pairing.decided == []  # the NXT topic has not been read past 10 yet
    pairing.feed(book("NXT", 100, 104, received_at=20), wall=0.1)  # releases KRX@10
    assert pairing.decided == [("KRX", 10)]
    assert pairing.reasons == ["no nxt quote before the trigger"]  # nothing was received before 10
    pairing.feed(book("KRX", 100, 102, received_at=30), wall=0.2)  # releases NXT@20
    assert pairing.decided[-1] == ("NXT", 20)
    assert pairing.records[-1]["krx_received_at"] == 10
    pairing.flush(wall=0.5)
    assert len(pairing.decided) == 2  # KRX@30 still waits (max wait 1 s)
    pairing.flush(wall=1.3)  # the NXT topic stayed quiet: decide with what is there
    assert pairing.decided[-1] == ("KRX", 30)
    assert pairing.records[-1]["nxt_received_at"] == 20


def test_a_quiet_venue_read_to_its_end_releases_triggers_after_the_settle_time() -> None:
    pairing = Pairing(hold=True)
    pairing.feed(book("NXT", 100, 104, received_at=5), wall=0.0)
    pairing.feed(book("KRX", 100, 102, received_at=10), wall=0.0)  # releases NXT@5
    assert pairing.decided == [("NXT", 5)]
    pairing.flush(wall=0.6)
    assert len(pairing.decided) == 1  # NXT not read past 10, and not known to be at its end
    assert pairing.join.waiting(0.3) == set()  # not held for the settle time yet
    assert pairing.join.waiting(0.6) == {(0, "NXT")}
    pairing.flush(wall=0.6, ends={(0, "NXT"): 2})  # the broker has one more NXT record
    assert len(pairing.decided) == 1
    pairing.flush(wall=0.3, ends={(0, "NXT"): 1})  # read to the end, but not settled
    assert len(pairing.decided) == 1
    pairing.flush(wall=0.6, ends={(0, "NXT"): 1})
    assert pairing.decided[-1] == ("KRX", 10)
    assert pairing.records[-1]["nxt_received_at"] == 5


def test_output_does_not_depend_on_how_the_two_topics_interleave() -> None:
    rng = random.Random(3)
    krx: list[Book] = []
    nxt: list[Book] = []
    t = 0
    for _ in range(200):
        t += rng.randint(1, 400)
        target = krx if rng.random() < 0.5 else nxt
        empty = rng.random() < 0.1
        target.append(
            book("KRX" if target is krx else "NXT", *_prices(rng, empty), t, 0 if empty else 5)
        )

    def run(order: list[str]) -> list[dict[str, Any]]:
        pairing = Pairing(max_age_ms=0.2, hold=True)
        streams = {"KRX": iter(krx), "NXT": iter(nxt)}
        for venue in order:
            pairing.feed(next(streams[venue]))
        pairing.flush()
        return sorted(pairing.records, key=lambda r: r[r["trigger_venue"].lower() + "_received_at"])

    in_time_order = [b.venue for b in sorted(krx + nxt, key=lambda b: b.received_at)]
    krx_first = ["KRX"] * len(krx) + ["NXT"] * len(nxt)
    shuffled = list(in_time_order)
    for _ in range(3):
        for i in range(len(shuffled) - 1):  # swap neighbours of different topics at random
            if shuffled[i] != shuffled[i + 1] and rng.random() < 0.5:
                shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    expected = run(in_time_order)
    assert len(expected) > 30
    # The same as a brute-force as-of join (latest other quote received at or before).
    brute = []
    for trigger in sorted(krx + nxt, key=lambda b: b.received_at):
        others = nxt if trigger.venue == "KRX" else krx
        before = [o for o in others if o.received_at <= trigger.received_at]
        if not before:
            continue
        mine, other = quote_of(trigger, 0), quote_of(before[-1], 0)
        krx_q, nxt_q = (mine, other) if trigger.venue == "KRX" else (other, mine)
        result = spread_record("005930", trigger.venue, krx_q, nxt_q, 0.2)
        if isinstance(result, dict):
            brute.append(result)
    assert brute == expected
    assert run(krx_first) == expected
    assert run(shuffled) == expected


def _prices(rng: random.Random, empty: bool) -> tuple[int, int]:
    if empty:
        return 0, 0
    bid = 70_000 + 100 * rng.randint(-3, 3)
    return bid, bid + 100 * rng.randint(1, 2)


def test_crossed_when_one_venues_bid_is_above_the_others_ask() -> None:
    pairing = Pairing()
    pairing.feed(book("KRX", 70_000, 70_100, received_at=0))
    pairing.feed(book("NXT", 70_200, 70_300, received_at=1))  # NXT bid > KRX ask
    pairing.feed(book("NXT", 70_100, 70_300, received_at=2))  # locked, not crossed
    pairing.feed(book("NXT", 69_800, 69_900, received_at=3))  # KRX bid > NXT ask
    assert [r["crossed"] for r in pairing.records] == [True, False, True]


def test_empty_sides_are_skipped() -> None:
    pairing = Pairing()
    pairing.feed(book("NXT", 70_000, 70_100, received_at=0))
    pairing.feed(book("KRX", 0, 0, received_at=1, qty=0))  # KRX in an auction
    pairing.feed(book("NXT", 70_000, 70_100, received_at=2))  # paired with the empty KRX book
    pairing.feed(book("KRX", 70_000, 70_100, received_at=3))
    assert pairing.reasons == [
        "no krx quote before the trigger",
        "krx side empty",
        "krx side empty",
        None,
    ]
    pairing.feed(book("NXT", 70_000, 70_100, received_at=4, qty=0))
    assert pairing.reasons[-1] == "nxt side empty"


def test_pairs_further_apart_than_the_bound_are_skipped() -> None:
    pairing = Pairing(max_age_ms=500)
    pairing.feed(book("KRX", 100, 101, received_at=0))
    pairing.feed(book("NXT", 100, 101, received_at=500_000))  # exactly the bound: kept
    pairing.feed(book("NXT", 100, 101, received_at=500_001))
    assert pairing.reasons[1:] == [None, "stale"]
    assert pairing.records[0]["age_ms"] == 500.0


def test_a_replay_after_a_restore_publishes_the_same_records() -> None:
    books = [
        book("KRX", 100, 102, received_at=0),
        book("NXT", 101, 103, received_at=1),
        book("KRX", 102, 104, received_at=2),
        book("NXT", 103, 105, received_at=3),
        book("KRX", 104, 106, received_at=4),
    ]
    first = Pairing()
    for i, b in enumerate(books):
        first.feed(b, offset=i)
    # The worker dies; its table survived (even ahead of the committed offsets): replay all.
    again = Pairing()
    again.store.update(first.store)
    for i, b in enumerate(books):
        again.feed(b, offset=i)
    assert again.records == first.records
    assert again.store == first.store  # replayed updates did not change the state


def test_quotes_are_kept_while_a_held_trigger_may_need_them() -> None:
    pairing = Pairing(max_age_ms=100_000, hold=True)
    pairing.committed = {"KRX": 99, "NXT": 99}  # everything committed (as far as it goes)
    for t in (50, 80):
        pairing.feed(book("NXT", 100, 102, received_at=t * SECOND))  # held: KRX not read
    for t in (10, 70, 90, 120):
        pairing.feed(book("KRX", 100, 104, received_at=t * SECOND))
    pairing.flush()
    pairs = {
        r["nxt_received_at"]: r["krx_received_at"]
        for r in pairing.records
        if r["trigger_venue"] == "NXT"
    }
    assert pairs == {50 * SECOND: 10 * SECOND, 80 * SECOND: 70 * SECOND}
    # KRX@70 s was the last KRX quote before the NXT watermark (80 s) when KRX@120 s came.
    assert [q[5] // SECOND for q in pairing.join.quotes[("005930", "KRX")]] == [70, 90, 120]


SECOND = 1_000_000  # receive times are in microseconds


def as_of_join(krx: list[Book], nxt: list[Book]) -> set[tuple[str, int, int]]:
    """(trigger venue, KRX and NXT receive times) of every pair, by brute force."""
    pairs = set()
    for trigger in krx + nxt:
        others = nxt if trigger.venue == "KRX" else krx
        before = [o for o in others if o.received_at <= trigger.received_at]
        if before:
            k, n = (trigger, before[-1]) if trigger.venue == "KRX" else (before[-1], trigger)
            pairs.add((trigger.venue, k.received_at, n.received_at))
    return pairs


def test_a_replay_pairs_the_same_however_far_one_topic_was_read_ahead() -> None:
    """Issue 6: NXT was fetched 100 updates ahead of KRX; the worker dies before KRX commits.

    NXT triggers were published and committed as KRX caught up, the KRX ones stayed held
    behind them; the restarted worker reads KRX again from offset 0 and NXT from its commit,
    with the table as the changelog had it. Every KRX trigger must find its NXT quote again.
    """
    nxt = [book("NXT", 100, 104, received_at=i * SECOND + SECOND) for i in range(100)]
    krx = [book("KRX", 100, 102, received_at=i * SECOND + SECOND // 2) for i in range(100)]
    first = Pairing(max_age_ms=5_000, hold=True)
    for i, b in enumerate(nxt):
        first.feed(b, offset=i)
    for i, b in enumerate(krx[:60]):
        first.feed(b, offset=i)
    assert first.decided == [("NXT", b.received_at) for b in nxt[:59]]
    first.committed = {"NXT": 59}  # the acknowledged NXT triggers are committed
    first.feed(krx[60], offset=60)  # (and the table is pruned as far as that allows)
    assert len(first.store) < 100 + 61
    # Crash. The replay starts at the committed offsets, the table as it was.
    again = Pairing(max_age_ms=5_000, hold=True)
    again.store.update(first.store)
    again.committed = dict(first.committed)
    for i, b in enumerate(krx):
        again.feed(b, offset=i)
    for i, b in enumerate(nxt[59:], start=59):
        again.feed(b, offset=i)
    again.flush()
    published = {
        (r["trigger_venue"], r["krx_received_at"], r["nxt_received_at"])
        for r in first.records + again.records
    }
    assert len(as_of_join(krx, nxt)) == 199
    assert published == as_of_join(krx, nxt)


def test_quotes_go_once_no_uncommitted_trigger_of_the_other_venue_can_need_them() -> None:
    pairing = Pairing(max_age_ms=5_000)
    for i in range(50):
        pairing.feed(book("KRX", 100, 102, received_at=(2 * i) * SECOND), offset=i)
        pairing.feed(book("NXT", 100, 104, received_at=(2 * i + 1) * SECOND), offset=i)
    assert len(pairing.store) == 100  # nothing committed yet: a replay may need them all
    pairing.committed = {"KRX": 40, "NXT": 45}  # KRX@80 s and NXT@91 s come next
    pairing.feed(book("KRX", 100, 102, received_at=100 * SECOND), offset=50)
    pairing.feed(book("NXT", 100, 104, received_at=101 * SECOND), offset=50)
    kept = {v: [q[5] // SECOND for q in pairing.join.quotes[("005930", v)]] for v in ("KRX", "NXT")}
    # KRX quotes from the last one before NXT@91 s; NXT ones from the last before KRX@80 s.
    assert kept == {"KRX": [90, 92, 94, 96, 98, 100], "NXT": list(range(79, 102, 2))}
    assert sorted(pairing.store) == sorted(
        f"005930|{v}|{q[6]}" for v in ("KRX", "NXT") for q in pairing.join.quotes[("005930", v)]
    )


def test_pruning_every_nth_quote_keeps_more_for_a_while_and_tidy_catches_up() -> None:
    every = Pairing(max_age_ms=5_000)
    sparse = Pairing(max_age_ms=5_000)
    sparse.join.prune_every = 8
    sizes = []
    for i in range(60):
        for pairing in (every, sparse):
            pairing.committed = {"KRX": max(0, i - 3), "NXT": max(0, i - 3)}
            pairing.feed(book("KRX", 100, 102, received_at=(2 * i) * SECOND), offset=i)
            pairing.feed(book("NXT", 100, 104, received_at=(2 * i + 1) * SECOND), offset=i)
        assert set(every.store) <= set(sparse.store)  # pruning later keeps more, never less
        sizes.append(len(sparse.store) - len(every.store))
    assert 8 <= max(sizes) <= 2 * 8  # pruned in steps of 8 quotes per symbol and venue
    assert sparse.records == every.records
    while sparse.join.tidy():
        pass
    assert sparse.store == every.store


def test_quotes_left_by_lagging_commits_go_in_idle_time_by_the_same_rule() -> None:
    pairing = Pairing(max_age_ms=5_000)
    for i in range(50):
        pairing.feed(book("KRX", 100, 102, received_at=(2 * i) * SECOND), offset=i)
        pairing.feed(book("NXT", 100, 104, received_at=(2 * i + 1) * SECOND), offset=i)
    assert len(pairing.store) == 100 and not any(pairing.join.held.values())
    pairing.committed = {"KRX": 50, "NXT": 50}  # committed up to the end: no more updates
    assert pairing.join.tidy(max_quotes=30) == 30  # a bounded amount per call
    while pairing.join.tidy():
        pass
    kept = {v: [q[5] // SECOND for q in pairing.join.quotes[("005930", v)]] for v in ("KRX", "NXT")}
    # What the next update of each venue would have left: KRX from the last quote before
    # NXT's watermark (99 s), NXT from the last before KRX's (98 s).
    assert kept == {"KRX": [98], "NXT": [97, 99]}
    assert sorted(pairing.store) == ["005930|KRX|49", "005930|NXT|48", "005930|NXT|49"]
    assert pairing.join.untidy == {("005930", "NXT"): 0}  # NXT@97 s may still be needed
    pairing.feed(book("KRX", 100, 102, received_at=100 * SECOND), offset=50)
    assert pairing.records[-1]["nxt_received_at"] == 99 * SECOND  # pairs as before


def test_a_quiet_venue_read_to_its_end_lets_the_other_venues_quotes_go() -> None:
    pairing = Pairing(max_age_ms=5_000, hold=True)
    pairing.feed(book("NXT", 100, 104, received_at=0), offset=0)
    pairing.committed = {"NXT": 1}
    for i in range(1, 20):  # NXT closed: each KRX trigger is released on NXT's end offset
        pairing.feed(book("KRX", 100, 102, received_at=i * SECOND), offset=i - 1, wall=i)
        pairing.flush(wall=i + 0.6, ends={(0, "NXT"): 1})
        pairing.committed["KRX"] = i
    assert len(pairing.records) == 5  # within 5 s of the NXT quote
    # NXT is known quiet through KRX@18 s (when found at its end): KRX@17 s may still pair.
    assert [q[5] // SECOND for q in pairing.join.quotes[("005930", "KRX")]] == [17, 18, 19]
    assert len(pairing.store) == 4


def test_an_input_that_is_not_a_book_is_released_after_earlier_held_triggers() -> None:
    pairing = Pairing(hold=True)
    pairing.feed(book("KRX", 100, 102, received_at=10))
    assert pairing.join.skip(0, "undecodable", wall=0.0, token="bad") == []
    pairing.feed(book("NXT", 100, 104, received_at=20))
    assert pairing.decided == [("KRX", 10), "bad"]
    assert pairing.join.skip(1, None, wall=0.0, token="alone") == [
        ("alone", SpreadOutcome(None, None))
    ]


def test_committed_offsets_are_recorded_when_the_broker_accepted_them() -> None:
    import faust
    from faust.types import TP

    from processors import faust_fixes

    faust_fixes.apply()
    app = faust.App("spread-commits", broker="kafka://127.0.0.1:1", store="memory://")
    tp = TP("kis.h0stasp0", 0)
    assert faust_fixes.committed_offset(app, tp) is None
    app.tables.on_commit({tp: 7})
    app.tables.on_commit({tp: 5, TP("kis.h0nxasp0", 0): 3})
    assert faust_fixes.committed_offset(app, tp) == 7
    assert faust_fixes.committed_offset(app, TP("kis.h0nxasp0", 0)) == 3


def test_start_up_refuses_books_with_different_partition_counts() -> None:
    assert stream_partitions("spread", {"kis.h0stasp0": 3, "kis.h0nxasp0": 3}) == 3
    with pytest.raises(TopologyError, match=r"kis\.h0stasp0.*kis\.h0nxasp0.*same partition"):
        stream_partitions("spread", {"kis.h0stasp0": 3, "kis.h0nxasp0": 6})
    with pytest.raises(TopologyError, match="bars stream reads topics with different"):
        stream_partitions("bars", {"kis.h0stcnt0": 3, "kis.h0nxcnt0": 3, "kis.h0uncnt0": 1})


async def test_agent_joins_both_book_topics() -> None:
    from tests.unit.processors_harness import Harness

    h = Harness(("spread",), spread_max_age_ms=1_000)

    def raw(bid: int, ask: int, received_at: int, qty: int = 5) -> dict[str, Any]:
        return {
            "symbol": "005930",
            "received_at": received_at,
            "bidp1": bid,
            "askp1": ask,
            "bidp_rsqn1": qty,
            "askp_rsqn1": qty,
        }

    async with h.running("spread") as ctx:
        await h.put(ctx, h.encode_raw("H0STASP0", raw(100, 102, 0)), topic="kis.h0stasp0")
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(101, 103, 10)), topic="kis.h0nxasp0")
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(0, 0, 20, 0)), topic="kis.h0nxasp0")
        await h.put(ctx, h.encode_raw("H0STASP0", raw(100, 104, 30)), topic="kis.h0stasp0")
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(99, 101, 5_000_000)), topic="kis.h0nxasp0")
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(100, 102, 5_000_040)), topic="kis.h0nxasp0")
        # Both topics read far past everything: every held trigger is decided.
        await h.put(ctx, h.encode_raw("H0STASP0", raw(0, 0, 9_000_000, 0)), topic="kis.h0stasp0")
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(0, 0, 9_000_001, 0)), topic="kis.h0nxasp0")
    records = h.published("kis.spread.krx_nxt")
    # NXT@10 pairs with KRX@0; KRX@30 pairs with the empty NXT@20; NXT@5s and NXT@5.00004s
    # pair with KRX@30, 5 s older: stale. The last one is still held (nothing read past it).
    assert [(r["trigger_venue"], r["spread_krw"]) for r in records] == [("NXT", 1.0)]
    assert h.keys("kis.spread.krx_nxt") == ["005930"]
    counts = h.p.stats["spread"].counts
    assert counts["not published: no nxt quote before the trigger"] == 1
    assert counts["not published: nxt side empty"] == 2
    assert counts["not published: stale"] == 2
    assert counts["not published: krx side empty"] == 1


def test_reset_drops_held_triggers_and_the_memory_view() -> None:
    pairing = Pairing(hold=True)
    pairing.feed(book("KRX", 100, 102, received_at=10))
    assert pairing.join.held[0]
    pairing.join.reset()
    pairing.flush()
    assert pairing.decided == []  # dropped: the rebalance makes Faust deliver it again
    pairing.feed(book("KRX", 100, 102, received_at=10), offset=0)  # redelivered: same offset
    pairing.feed(book("NXT", 100, 104, received_at=20))
    pairing.flush()
    assert sorted(pairing.decided) == [("KRX", 10), ("NXT", 20)]
    assert [(r["trigger_venue"], r["krx_received_at"]) for r in pairing.records] == [("NXT", 10)]


class Changelog(dict[str, Any]):
    """A table whose writes after the last flush may be lost in a crash, as Faust's can."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: dict[str, Any] = {}
        self.since_flush: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.since_flush.append((key, value))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.since_flush.append((key, None))

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        return default

    def flush(self) -> None:
        for key, value in self.since_flush:
            if value is None:
                self.flushed.pop(key, None)
            else:
                self.flushed[key] = value
        self.since_flush.clear()

    def crash(self, rng: random.Random) -> None:
        """Keep the flushed state plus a random prefix of the later writes."""
        kept = self.since_flush[: rng.randint(0, len(self.since_flush))]
        self.since_flush = kept
        self.flush()
        dict.clear(self)
        dict.update(self, self.flushed)


class ChangelogWriter(MappingWriter):
    """Local writes stay out of the `Changelog` (lost in a crash)."""

    def set_local(self, key: str, value: Any) -> None:
        dict.__setitem__(self.store, key, value)

    def delete_local(self, key: str) -> None:
        dict.pop(self.store, key, None)


@pytest.mark.parametrize("prune_every", [1, 7])
@pytest.mark.parametrize("seed", [13, 16, 19, 20, 21, 22])
def test_crashes_anywhere_lose_no_pairing_however_the_topics_are_fetched(
    seed: int, prune_every: int
) -> None:
    """Random fetch batches, commits and crashes; the outputs together equal the as-of join.

    (With these seeds, a table that keeps only what the held triggers need, as if every
    published output were safe, loses pairings: a quarter of seeds 0-59 fail that way; a
    maximum wait that releases triggers while the other venue is behind fails them all.)
    """
    rng = random.Random(seed)
    books: dict[str, list[Book]] = {"KRX": [], "NXT": []}
    t = 0
    for _ in range(600):
        t += rng.choice((0, 0, 1_000, 30_000, 200_000, 900_000))  # bursts share a receive time
        venue = "KRX" if rng.random() < 0.6 else "NXT"
        empty = rng.random() < 0.05
        books[venue].append(book(venue, *_prices(rng, empty), t, 0 if empty else 5))
    expected = set()
    for venue, triggers in books.items():
        for i, trigger in enumerate(triggers):
            others = books["NXT" if venue == "KRX" else "KRX"]
            before = [j for j, o in enumerate(others) if o.received_at <= trigger.received_at]
            if before:
                mine, other = quote_of(trigger, i), quote_of(others[before[-1]], before[-1])
                k, n = (mine, other) if venue == "KRX" else (other, mine)
                record = spread_record("005930", venue, k, n, 2_000)
                if isinstance(record, dict):
                    expected.add(tuple(sorted(record.items())))
    assert len(expected) > 300

    store = Changelog()
    committed = {"KRX": 0, "NXT": 0}
    published: set[tuple[tuple[str, Any], ...]] = set()
    unflushed: list[tuple[tuple[str, Any], ...]] = []  # sent, not yet flushed by a commit
    wall = 0.0
    for life in range(12):
        join = SpreadJoin(
            store,
            max_age_ms=2_000,
            max_wait_s=2.0,  # (a slow worker: the maximum wait passes while catching up)
            settle_s=0.5,
            committed=lambda partition, venue: committed[venue],
            writer=ChangelogWriter(store),
            prune_every=prune_every,
        )
        position = dict(committed)
        ends = {(0, v): len(books[v]) for v in books}  # all written before the first read
        acked: dict[str, set[int]] = {"KRX": set(), "NXT": set()}

        def take(
            decided: list[tuple[Any, SpreadOutcome]], acked: dict[str, set[int]] = acked
        ) -> None:
            for (venue, offset), outcome in decided:
                acked[venue].add(offset)
                if outcome.record is not None:
                    unflushed.append(tuple(sorted(outcome.record.items())))

        steps = rng.randint(5, 40) if life < 11 else 10**9
        for _ in range(steps):
            unread = [v for v in books if position[v] < len(books[v])]
            if not unread:
                if life < 11:
                    break
                wall += 1
                take(join.expire(wall, ends, {(0, v): committed[v] for v in books}))
                if not any(join.held.values()):
                    break
                continue
            # The release timer (every 50 ms in a worker) reads the end offsets first,
            # and prunes in idle time (here whether or not a trigger is held).
            take(join.expire(wall, ends, {(0, v): committed[v] for v in books}))
            join.tidy(max_quotes=rng.randint(1, 50))
            venue = rng.choice(unread)
            for _ in range(rng.randint(1, 60)):  # one fetch batch of one topic
                if position[venue] >= len(books[venue]):
                    break
                offset = position[venue]
                position[venue] += 1
                wall += 0.01
                b = books[venue][offset]
                take(join.on_book(b, offset=offset, partition=0, wall=wall, token=(venue, offset)))
            if rng.random() < 0.3:
                wall += 1
                take(join.expire(wall, ends, {(0, v): committed[v] for v in books}))
            if rng.random() < 0.4:  # Faust's commit: flush the producer, then the offsets
                committing = dict(committed)
                for v in committing:
                    while committing[v] in acked[v]:
                        committing[v] += 1
                join.before_commit({(0, v): offset for v, offset in committing.items()})
                store.flush()
                published.update(unflushed)
                unflushed.clear()
                if rng.random() < 0.8:  # (else the broker refused the commit)
                    committed.update(committing)
        if life < 11:  # a random part of what was sent since the last commit is lost
            store.crash(rng)
            published.update(unflushed[: rng.randint(0, len(unflushed))])
            unflushed.clear()
    published.update(unflushed)
    assert position == {v: len(books[v]) for v in books}
    assert published == expected


def test_acknowledgements_below_a_seek_target_are_forgotten() -> None:
    from types import SimpleNamespace

    from faust.types import TP

    from processors.faust_fixes import forget_acks_below

    krx, nxt = TP("kis.h0stasp0", 1), TP("kis.h0nxasp0", 1)
    consumer = SimpleNamespace(
        _acked={krx: [0, 1, 2, 5, 6, 362, 363], nxt: [40, 41]},
        _acked_index={krx: {0, 1, 2, 5, 6, 362, 363}, nxt: {40, 41}},
    )
    forget_acks_below(consumer, {krx: 362, nxt: None})
    assert consumer._acked == {krx: [362, 363], nxt: [40, 41]}
    assert consumer._acked_index == {krx: {362, 363}, nxt: {40, 41}}


def test_the_view_shows_each_venues_latest_quote_in_the_table() -> None:
    from processors.spread import latest_quotes

    pairing = Pairing()
    pairing.feed(book("KRX", 100, 102, received_at=1), offset=7)
    pairing.feed(book("NXT", 101, 103, received_at=2), offset=3)
    pairing.feed(book("KRX", 104, 106, received_at=3), offset=8)
    latest = latest_quotes(pairing.store, "005930")
    assert latest is not None
    assert (latest["KRX"], latest["NXT"]) == (
        [104, 106, 10, 10, 0, 3, 8],
        [101, 103, 10, 10, 0, 2, 3],
    )
    assert latest_quotes(pairing.store, "000660") is None


def test_the_maximum_wait_does_not_apply_while_the_other_venue_is_known_to_be_behind() -> None:
    """A worker catching up on a backlog: KRX is slow to read, NXT@20 must wait for it."""
    pairing = Pairing(hold=True)  # max wait 1 s, settle 0.5 s
    pairing.feed(book("KRX", 100, 102, received_at=5), offset=0, wall=0.0)
    pairing.feed(book("NXT", 100, 104, received_at=20), offset=0, wall=0.0)
    pairing.flush(wall=0.6, ends={(0, "KRX"): 3})  # the broker holds 2 more KRX records
    pairing.flush(wall=5.0)  # far past the maximum wait: still held
    pairing.feed(book("KRX", 100, 102, received_at=15), offset=1, wall=5.1)
    assert ("NXT", 20) not in pairing.decided
    pairing.feed(book("KRX", 102, 104, received_at=18), offset=2, wall=5.2)  # read to the end
    assert ("NXT", 20) in pairing.decided
    nxt_triggered = [r for r in pairing.records if r["trigger_venue"] == "NXT"]
    assert [r["krx_received_at"] for r in nxt_triggered] == [18]


def test_the_index_is_rebuilt_once_the_tables_recovery_completed() -> None:
    pairing = Pairing(max_age_ms=100_000, hold=True)
    pairing.join.reset()  # an assignment; an event arrives before the recovery is done
    pairing.feed(book("KRX", 100, 102, received_at=50 * SECOND), offset=9)
    pairing.store["005930|NXT|4"] = quote_of(book("NXT", 101, 103, received_at=40 * SECOND), 4)
    pairing.join.reload()  # the recovery completed: NXT@40 s came from the changelog
    pairing.feed(book("NXT", 101, 105, received_at=60 * SECOND), offset=5)
    pairing.flush()
    assert [(r["trigger_venue"], r["nxt_received_at"]) for r in pairing.records] == [
        ("KRX", 40 * SECOND),
        ("NXT", 60 * SECOND),
    ]


def test_tidy_writes_the_table_in_the_quotes_own_partition_outside_the_agent() -> None:
    import faust

    from processors.table_writes import TableWriter

    app = faust.App("spread-tidy", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("spread_books", default=None, partitions=3)
    sent: list[tuple[int | None, Any, Any]] = []

    class Sent:
        def __init__(self, partition: int | None) -> None:
            self.message, self.partition = self, partition

    def send_changelog(partition: int | None, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
        sent.append((partition, key, value))
        return Sent(partition)

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    committed: dict[str, int | None] = {"KRX": None, "NXT": None}
    join = SpreadJoin(
        table,
        max_age_ms=5_000,
        committed=lambda partition, venue: committed[venue],
        writer=TableWriter(table),
    )
    for i in range(50):
        for venue, t in (("KRX", 2 * i), ("NXT", 2 * i + 1)):
            join.on_book(book(venue, 100, 102, t * SECOND), offset=i, partition=2, wall=0)
    assert sent == []  # nothing in the changelog before a commit
    # KRX committed far ahead of NXT: a replay of NXT from offset 10 (received at 21 s)
    # needs the KRX quotes from the last received by then on; NXT needs nothing below 10.
    assert join.before_commit({(2, "KRX"): 50, (2, "NXT"): 10}) == 40
    assert {partition for partition, _, _ in sent} == {2}
    assert [key for _, key, _ in sent] == [f"005930|KRX|{i}" for i in range(10, 50)]
    committed.update(KRX=50, NXT=50)
    join.expire(100.0)
    sent.clear()
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["005930|KRX|0"] = None  # (a Faust table outside the agent: no current event)
    assert join.tidy() > 0
    # Tombstones only for the quotes written, in their partition; the others just go.
    assert [(partition, key, value) for partition, key, value in sent] == [
        (2, f"005930|KRX|{i}", None) for i in range(10, 49)
    ]
    assert sorted(table) == ["005930|KRX|49", "005930|NXT|48", "005930|NXT|49"]


@pytest.mark.parametrize("seed", range(6))
def test_the_as_of_quote_is_the_latest_by_offset_received_at_or_before_the_trigger(
    seed: int,
) -> None:
    """Binary search while receive times rise with offsets, the walk back once they do not
    (two WebSocket sessions): both give the reference answer, also after a reload, and after
    a replay into a restored table that lacks some of the quotes (never written to the
    changelog), which puts them back in offset order."""
    rng = random.Random(seed)
    store: dict[str, Any] = {}
    join = SpreadJoin(store, max_age_ms=10_000)
    fed: list[tuple[int, int]] = []  # (offset, received_at) of the KRX quotes
    t = 1_000
    for offset in range(60):
        t += rng.randrange(0, 50)
        received = t - rng.randrange(0, 200) if seed % 2 and rng.random() < 0.2 else t
        join.on_book(book("KRX", 100, 102, received), offset=offset, partition=0, wall=0)
        fed.append((offset, received))
    disordered = any(a[1] > b[1] for a, b in pairwise(fed))
    assert (("005930", "KRX") in join.disordered) == disordered
    for share in (0.3, 0.0):  # (0: only the last quote, written: every other one inserted)
        restored = {k: q for k, q in store.items() if rng.random() < share or q[SRC] == 59}
        replayed = SpreadJoin(restored, max_age_ms=10_000)
        for offset, received in fed:
            replayed.on_book(book("KRX", 100, 102, received), offset=offset, partition=0, wall=0)
        assert [q[SRC] for q in replayed.quotes[("005930", "KRX")]] == list(range(60))
        assert (("005930", "KRX") in replayed.disordered) == disordered
    for reload in (False, True, "replayed"):
        if reload == "replayed":
            join = replayed
        elif reload:
            join.reload()
        for probe in range(800, t + 100, 7):
            before = [o for o, r in fed if r <= probe]
            outcome = join.decide("005930", "NXT", quote_of(book("NXT", 100, 102, probe), 0))
            if not before:
                assert outcome.reason == "no krx quote before the trigger"
            else:
                assert outcome.record is not None
                assert outcome.record["krx_received_at"] == dict(fed)[max(before)]


def test_the_agents_quote_from_the_decoders_values_is_the_books_quote() -> None:
    """The agent reads `QUOTE_COLUMNS` only; it must get what a whole book would give."""
    from processors.inputs import BOOK_COLUMNS, QUOTE_COLUMNS, book_from_values
    from processors.spread import quote_from_values

    rng = random.Random(4)
    choices: list[Any] = [None, 0, -5, 70_000, 12, True, 1.5, "x", ""]
    for _ in range(2_000):
        record = {name: rng.choice(choices) for name in BOOK_COLUMNS}
        record["symbol"] = rng.choice(["005930", "", None, 7])
        record["venue"] = rng.choice(["KRX", "NXT", "", None])
        record["received_at"] = rng.choice([1_700_000_000_000_000, None, True, 2.5])
        book = book_from_values(tuple(record[name] for name in BOOK_COLUMNS))
        got = quote_from_values(tuple(record[name] for name in QUOTE_COLUMNS), 42)
        assert got == (book if isinstance(book, str) else quote_of(book, 42))


async def test_held_triggers_are_released_as_soon_as_a_mark_arrives_not_at_the_next_tick() -> None:
    import asyncio
    import threading

    from processors.spread import release_loop
    from processors.spread_marks import ProducerMarks
    from producer.marks import Mark

    marks = ProducerMarks(["kis.h0stasp0"])
    calls: list[int] = []
    called = asyncio.Event()

    async def release() -> None:
        calls.append(marks.received)
        called.set()
        if len(calls) == 2:
            raise RuntimeError("one failing tick")

    loop = asyncio.create_task(release_loop(release, 3600.0, marks))  # (a tick: once an hour)
    while marks.on_update is None:
        await asyncio.sleep(0)
    try:
        for n in (1, 2, 3):
            called.clear()
            reader = threading.Thread(target=marks.update, args=("p1", Mark(n, {})))
            reader.start()  # (marks are read on a thread of their own)
            reader.join()
            await asyncio.wait_for(called.wait(), 10)
            assert calls[-1] == n  # woken by the mark, and still running after a failure
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    assert marks.on_update is None
