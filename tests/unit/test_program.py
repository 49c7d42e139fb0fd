"""Program net-buy: per-symbol ledger, venue totals, then both Faust agents."""

from __future__ import annotations

import datetime as dt
from typing import Any

from processors.inputs import DAY_MS, ProgramUpdate, kst_instant_ms, program_from
from processors.program import MarketLedger, SymbolLedger, latest_records

DAY = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
NOON = kst_instant_ms(DAY, 12 * 3_600_000)


def update(
    symbol: str, net_qty: int, net_amount: int, *, venue: str = "KRX", day: int = DAY
) -> ProgramUpdate:
    return ProgramUpdate(
        symbol=symbol,
        venue=venue,
        business_date=day,
        event_time=NOON + (day - DAY) * DAY_MS,
        received_at=1,
        sell_qty=100,
        sell_amount=1_000,
        buy_qty=100 + net_qty,
        buy_amount=1_000 + net_amount,
        net_qty=net_qty,
        net_amount=net_amount,
    )


class Flow:
    """Both ledgers wired as the agents wire them (symbol records feed the venue totals)."""

    def __init__(self) -> None:
        self.symbols = SymbolLedger({})
        self.market = MarketLedger({})
        self.offset = 0
        self.records: list[dict[str, Any]] = []
        self.totals: list[dict[str, Any]] = []
        self.reasons: list[str | None] = []

    def feed(self, u: ProgramUpdate, offset: int | None = None) -> None:
        if offset is None:
            offset, self.offset = self.offset, self.offset + 1
        outcome = self.symbols.on_update(u, offset=offset, partition=0)
        self.reasons.append(outcome.reason)
        if outcome.record is not None:
            self.records.append(outcome.record)
            total = self.market.on_symbol(outcome.record, src=offset, partition=0)
            if total is not None:
                self.totals.append(total)


def test_first_update_of_the_day_has_no_change_then_changes_follow() -> None:
    flow = Flow()
    flow.feed(update("A", 10, 1_000))
    flow.feed(update("A", 25, 2_500))
    flow.feed(update("A", 5, 500))
    assert [(r["net_qty"], r["net_qty_change"], r["net_amount_change"]) for r in flow.records] == [
        (10, None, None),
        (25, 15, 1_500),
        (5, -20, -2_000),
    ]
    assert flow.records[1] == {
        "scope": "symbol",
        "symbol": "A",
        "venue": "KRX",
        "business_date": DAY,
        "event_time": NOON,
        "received_at": 1,
        "net_qty": 25,
        "net_amount": 2_500,
        "net_qty_change": 15,
        "net_amount_change": 1_500,
        "buy_qty": 125,
        "buy_amount": 3_500,
        "sell_qty": 100,
        "sell_amount": 1_000,
        "market_net_qty": None,
        "market_net_amount": None,
        "market_symbols": None,
    }


def test_venue_total_is_the_sum_of_latest_values_not_of_updates() -> None:
    flow = Flow()
    flow.feed(update("A", 10, 100))
    flow.feed(update("B", -4, -40))
    flow.feed(update("A", 12, 120))
    flow.feed(update("C", 1, 10, venue="NXT"))
    assert [
        (t["venue"], t["symbol"], t["market_net_qty"], t["market_net_amount"], t["market_symbols"])
        for t in flow.totals
    ] == [
        ("KRX", "A", 10, 100, 1),
        ("KRX", "B", 6, 60, 2),
        ("KRX", "A", 8, 80, 2),
        ("NXT", "C", 1, 10, 1),
    ]


def test_duplicate_update_publishes_nothing_and_cannot_inflate_the_total() -> None:
    flow = Flow()
    flow.feed(update("A", 10, 100))
    flow.feed(update("B", 5, 50))
    flow.feed(update("A", 10, 100))  # KIS repeats the same cumulative values
    flow.feed(update("A", 10, 100))
    assert flow.reasons[2:] == ["duplicate", "duplicate"]
    assert len(flow.records) == 2
    assert flow.totals[-1]["market_net_qty"] == 15
    flow.feed(update("A", 11, 110))
    assert flow.totals[-1]["market_net_qty"] == 16
    assert flow.records[-1]["net_qty_change"] == 1


def test_replayed_offsets_are_ignored_by_both_ledgers() -> None:
    flow = Flow()
    flow.feed(update("A", 10, 100), offset=5)
    flow.feed(update("A", 20, 200), offset=6)
    flow.feed(update("A", 10, 100), offset=5)  # redelivered after a restart
    assert flow.reasons[-1] == "replayed"
    # The venue ledger also ignores a symbol record it has already applied.
    assert flow.market.on_symbol(flow.records[0], src=5, partition=0) is None
    assert flow.market.totals["KRX"].net_qty == 20


def test_new_business_date_starts_from_zero() -> None:
    flow = Flow()
    flow.feed(update("A", 10, 100))
    flow.feed(update("B", 20, 200))
    flow.feed(update("A", 3, 30, day=DAY + 1))
    assert flow.records[-1]["net_qty_change"] is None  # first update of the new day
    assert flow.totals[-1]["business_date"] == DAY + 1
    assert (flow.totals[-1]["market_net_qty"], flow.totals[-1]["market_symbols"]) == (3, 1)
    # A late update of the previous day for A (already on the new day) is stale.
    flow.feed(update("A", 99, 990, day=DAY))
    assert flow.reasons[-1] == "stale date"
    # B has not traded on the new day: its late update is published, dated the old day,
    # but it does not move the new day's venue total.
    n_totals = len(flow.totals)
    flow.feed(update("B", 21, 210, day=DAY))
    assert (flow.records[-1]["business_date"], flow.records[-1]["net_qty_change"]) == (DAY, 1)
    assert len(flow.totals) == n_totals
    assert flow.market.totals["KRX"].net_qty == 3
    # Yesterday's symbol entries are gone from the venue ledger.
    assert all(v["day"] == DAY + 1 for v in flow.market.store.values())


def test_rebuilt_totals_equal_the_running_totals() -> None:
    flow = Flow()
    for i, (symbol, venue) in enumerate([("A", "KRX"), ("B", "KRX"), ("A", "NXT"), ("A", "KRX")]):
        flow.feed(update(symbol, i * 7 - 3, i * 70 - 30, venue=venue))
    running = {v: (t.net_qty, t.net_amount, t.symbols) for v, t in flow.market.totals.items()}
    restored = MarketLedger(dict(flow.market.store))
    restored.rebuild({0})
    assert {v: (t.net_qty, t.net_amount, t.symbols) for v, t in restored.totals.items()} == running
    assert [t["market_net_qty"] for t in restored.current()] == [running["KRX"][0], 11]
    restored.rebuild({1})  # partitions this worker does not hold
    assert restored.totals == {}


def test_latest_records_are_resent_with_their_source_offsets() -> None:
    flow = Flow()
    flow.feed(update("A", 1, 10))
    flow.feed(update("B", 2, 20))
    flow.feed(update("A", 3, 30))
    again = latest_records(list(flow.symbols.store.items()), {0})
    assert [(r["symbol"], r["net_qty"], src) for r, src in again] == [("A", 3, 2), ("B", 2, 1)]
    assert latest_records(list(flow.symbols.store.items()), {3}) == []


def test_program_from_raw_record() -> None:
    record = {
        "symbol": "005930",
        "venue": "NXT",
        "event_time": NOON,
        "received_at": 5,
        "seln_cnqn": 10,
        "shnu_cnqn": 30,
        "seln_tr_pbmn": 100,
        "shnu_tr_pbmn": 300,
        "ntby_cnqn": 20,
        "ntby_tr_pbmn": 200,
    }
    u = program_from(record)
    assert isinstance(u, ProgramUpdate)
    assert (u.business_date, u.net_qty, u.net_amount, u.buy_qty) == (DAY, 20, 200, 30)
    derived = program_from({**record, "ntby_cnqn": None, "ntby_tr_pbmn": None})
    assert isinstance(derived, ProgramUpdate) and derived.net_qty == 20
    assert program_from({**record, "ntby_cnqn": None, "shnu_cnqn": None}) == "no net-buy figures"
    # No exchange time: the business date comes from the receive time (Korea date).
    late_evening = kst_instant_ms(DAY, 23 * 3_600_000) * 1000
    fallback = program_from({**record, "event_time": None, "received_at": late_evening})
    assert isinstance(fallback, ProgramUpdate) and fallback.business_date == DAY


async def test_agents_publish_symbol_records_and_venue_totals() -> None:
    from tests.unit.processors_harness import Harness

    h = Harness(("program",))
    by_venue = "kis-stream-processors-program-by-venue"

    def raw(net: int, symbol: str = "005930") -> dict[str, Any]:
        return {
            "symbol": symbol,
            "event_time": NOON,
            "received_at": net,
            "seln_cnqn": 0,
            "shnu_cnqn": net,
            "seln_tr_pbmn": 0,
            "shnu_tr_pbmn": net * 10,
            "ntby_cnqn": net,
            "ntby_tr_pbmn": net * 10,
        }

    async with h.running("program") as ctx:
        for value, symbol, partition in [(5, "A", 0), (7, "B", 1), (7, "B", 1), (9, "A", 0)]:
            data = h.encode_raw("H0STPGM0", raw(value, symbol))
            await h.put(ctx, data, topic="kis.h0stpgm0", partition=partition)
        await h.put(ctx, b"junk", topic="kis.h0stpgm0")
    forwarded = [(k, v) for name, k, v in h.sent if name == by_venue]
    assert [k for k, _ in forwarded] == ["KRX", "KRX", "KRX"]  # the duplicate B is not forwarded
    async with h.running("program_market") as ctx:
        for key, value in forwarded:
            await h.put(ctx, value, topic=by_venue, key=key.encode())
        await h.put(ctx, forwarded[0][1], topic=by_venue, key=b"KRX")  # replayed: ignored
        await h.put(ctx, b"{not json", topic=by_venue, key=b"KRX")
    records = h.published("kis.program.netbuy")
    symbols = [r for r in records if r["scope"] == "symbol"]
    totals = [r for r in records if r["scope"] == "market"]
    assert [(r["symbol"], r["net_qty"], r["net_qty_change"]) for r in symbols] == [
        ("A", 5, None),
        ("B", 7, None),
        ("A", 9, 4),
    ]
    assert [(t["symbol"], t["market_net_qty"], t["market_net_amount"]) for t in totals] == [
        ("A", 5, 50),
        ("B", 12, 120),
        ("A", 16, 160),
    ]
    assert h.keys("kis.program.netbuy") == ["A|KRX", "B|KRX", "A|KRX", "*|KRX", "*|KRX", "*|KRX"]
    counts = h.p.stats["program"].counts
    assert counts["not published: duplicate"] == 1
    assert counts["skipped: undecodable"] == 1
    assert counts["skipped: bad venue message"] == 1
