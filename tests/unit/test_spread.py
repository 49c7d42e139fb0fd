"""KRX-vs-NXT spread: the pairing rules, the start-up partition check, then the agent."""

from __future__ import annotations

from typing import Any

import pytest

from processors.inputs import Book, book_from
from processors.spread import SpreadBook
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
    def __init__(self, max_age_ms: float = 1_000) -> None:
        self.book = SpreadBook({}, max_age_ms)
        self.offsets = {"KRX": 0, "NXT": 0}
        self.records: list[dict[str, Any]] = []
        self.reasons: list[str | None] = []

    def feed(self, b: Book, offset: int | None = None) -> None:
        if offset is None:
            offset = self.offsets[b.venue]
            self.offsets[b.venue] += 1
        outcome = self.book.on_book(b, offset=offset, partition=0)
        self.reasons.append(outcome.reason)
        if outcome.record is not None:
            self.records.append(outcome.record)


def test_each_update_pairs_with_the_other_venues_latest_quote() -> None:
    pairing = Pairing()
    pairing.feed(book("KRX", 70_000, 70_100, received_at=1_000_000))
    assert pairing.reasons == ["no nxt quote yet"]
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


def test_crossed_when_one_venues_bid_is_above_the_others_ask() -> None:
    pairing = Pairing()
    pairing.feed(book("KRX", 70_000, 70_100, received_at=0))
    pairing.feed(book("NXT", 70_200, 70_300, received_at=1))  # NXT bid > KRX ask
    pairing.feed(book("NXT", 70_100, 70_300, received_at=2))  # locked, not crossed
    pairing.feed(book("NXT", 69_800, 69_900, received_at=3))  # KRX bid > NXT ask
    assert [r["crossed"] for r in pairing.records] == [True, False, True]


def test_empty_sides_are_skipped_and_remembered() -> None:
    pairing = Pairing()
    pairing.feed(book("NXT", 70_000, 70_100, received_at=0))
    pairing.feed(book("KRX", 0, 0, received_at=1, qty=0))  # KRX in an auction
    pairing.feed(book("NXT", 70_000, 70_100, received_at=2))  # paired with the empty KRX book
    pairing.feed(book("KRX", 70_000, 70_100, received_at=3))
    assert pairing.reasons == ["no krx quote yet", "krx side empty", "krx side empty", None]
    pairing.feed(book("NXT", 70_000, 70_100, received_at=4, qty=0))
    assert pairing.reasons[-1] == "nxt side empty"


def test_pairs_further_apart_than_the_bound_are_skipped() -> None:
    pairing = Pairing(max_age_ms=500)
    pairing.feed(book("KRX", 100, 101, received_at=0))
    pairing.feed(book("NXT", 100, 101, received_at=500_000))  # exactly the bound: kept
    pairing.feed(book("NXT", 100, 101, received_at=500_001))
    assert pairing.reasons[1:] == [None, "stale"]
    assert pairing.records[0]["age_ms"] == 500.0


def test_a_replayed_update_does_not_roll_the_state_back_but_is_published() -> None:
    pairing = Pairing()
    pairing.feed(book("KRX", 100, 102, received_at=0), offset=0)
    pairing.feed(book("NXT", 100, 102, received_at=1), offset=0)
    pairing.feed(book("KRX", 110, 112, received_at=2), offset=1)
    pairing.feed(book("KRX", 100, 102, received_at=0), offset=0)  # redelivered
    assert pairing.records[-1]["krx_received_at"] == 0  # the replayed update itself
    pairing.feed(book("NXT", 100, 102, received_at=3), offset=1)
    assert pairing.records[-1]["krx_bid"] == 110  # state kept the newer KRX quote


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
        await h.put(ctx, h.encode_raw("H0NXASP0", raw(100, 102, 40)), topic="kis.h0nxasp0")
    records = h.published("kis.spread.krx_nxt")
    assert [(r["trigger_venue"], r["spread_krw"]) for r in records] == [("NXT", 1.0), ("NXT", -1.0)]
    assert h.keys("kis.spread.krx_nxt") == ["005930", "005930"]
    counts = h.p.stats["spread"].counts
    assert counts["not published: nxt side empty"] == 2  # the empty NXT book, then KRX's update
    assert counts["not published: stale"] == 1  # 5 s after the KRX quote
