"""Each derived stream, as published, against the oracle computed from the raw topics.

`exactly_once` is for a deployment that never re-read an input (one worker, no crash, no
rebalance): nothing may repeat and each key comes out in the order of the raw records.
Otherwise at-least-once delivery may repeat a record, and repeats must be identical copies.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.e2e import processors_oracle as oracle

Raw = dict[str, list[oracle.Message]]
"""Raw topic name without the prefix (`h0stcnt0`) -> its records."""


def _values(messages: list[oracle.Message]) -> list[dict[str, Any]]:
    return [m.value for m in messages]


def check_bars(raw: Raw, published: list[oracle.Message], *, exactly_once: bool) -> None:
    expected = oracle.oracle_bars(raw["h0stcnt0"] + raw["h0nxcnt0"] + raw["h0uncnt0"])
    assert len(expected) > 50
    final = oracle.final_bars(published)
    oracle.compare(final.values(), expected.values(), duplicates_ok=False)
    assert {m.key for m in published} == {f"{s}|{v}" for s, v, _ in expected}
    if exactly_once:  # each (symbol, venue, second) published once, then only revised
        by_window: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        for m in published:
            window = (m.value["symbol"], m.value["venue"], m.value["window_start"])
            by_window[window].append(m.value["revision"])
        for window, revisions in by_window.items():
            assert revisions == list(range(len(revisions))), window


def check_imbalance(raw: Raw, published: list[oracle.Message], *, exactly_once: bool) -> None:
    expected = oracle.oracle_imbalance(raw["h0stasp0"] + raw["h0nxasp0"] + raw["h0unasp0"])
    assert len(expected) > 300
    oracle.compare(_values(published), expected, duplicates_ok=not exactly_once)
    if exactly_once:  # per key, published in the order of the raw records
        order: dict[str, list[int]] = defaultdict(list)
        for m in published:
            order[m.key].append(m.value["received_at"])
        assert all(seq == sorted(seq) for seq in order.values())


def check_program(raw: Raw, published: list[oracle.Message], *, exactly_once: bool) -> None:
    expected, totals = oracle.oracle_program(raw["h0stpgm0"] + raw["h0nxpgm0"] + raw["h0unpgm0"])
    symbols: dict[str, list[dict[str, Any]]] = defaultdict(list)
    markets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in published:
        (symbols if m.value["scope"] == "symbol" else markets)[m.key].append(m.value)
    assert sum(len(r) for r in expected.values()) > 20
    assert {k: oracle.distinct_in_order(v) for k, v in symbols.items()} == expected
    # Venue totals: the last one is the sum of every symbol's final cumulative value ...
    for venue, (day, qty, amount, n) in totals.items():
        last = markets[f"*|{venue}"][-1]
        assert (
            last["business_date"],
            last["market_net_qty"],
            last["market_net_amount"],
            last["market_symbols"],
        ) == (day, qty, amount, n)
    # ... and each one is the sum of the latest values of the updates before it.
    if exactly_once:
        for venue_records in markets.values():
            latest: dict[str, tuple[int, int]] = {}
            for record in venue_records:
                if record["symbol"] is not None:
                    latest[record["symbol"]] = (record["net_qty"], record["net_amount"])
                assert record["market_net_qty"] == sum(q for q, _ in latest.values())
                assert record["market_net_amount"] == sum(a for _, a in latest.values())


def check_spread(
    raw: Raw, published: list[oracle.Message], max_age_ms: float, *, exactly_once: bool
) -> None:
    expected = oracle.oracle_spread(raw["h0stasp0"], raw["h0nxasp0"], max_age_ms)
    assert len(expected) > 100
    assert {r["trigger_venue"] for r in expected} == {"KRX", "NXT"}
    oracle.compare(_values(published), expected, duplicates_ok=not exactly_once)
