"""An independent oracle for the four derived streams, computed from the raw topics.

Plain Python written from the stream definitions (docs/streams.md), sharing no code with
processors/: it reads every raw record back from Kafka, decodes it with the writer schema
from the registry, and computes what each stream must contain. `compare` then matches the
published records against it (floats to 1e-9).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from producer.avro import decode_confluent

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
KST_MS = 9 * HOUR_MS


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, Any]


def read_topic(bootstrap: str, registry_url: str, topic: str) -> list[Message]:
    """Every message of a topic, partition by partition in offset order."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "oracle", "enable.auto.commit": False}
    )
    registry = SchemaRegistryClient({"url": registry_url})
    schemas: dict[int, Any] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        out: list[Message] = []
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(5)
                assert message is not None, f"{topic}[{partition}] stopped before {high}"
                if message.error():
                    continue
                data = message.value()
                schema_id = int.from_bytes(data[1:5], "big")
                if schema_id not in schemas:
                    schemas[schema_id] = json.loads(registry.get_schema(schema_id).schema_str)
                _, value = decode_confluent(data, schemas[schema_id])
                key = message.key().decode() if message.key() else ""
                out.append(Message(topic, partition, message.offset(), key, value))
                if message.offset() >= high - 1:
                    break
        return out
    finally:
        consumer.close()


# ----------------------------------------------------------------------------------- bars


def bar_second(value: dict[str, Any]) -> int | None:
    """The tick's exchange second as UTC epoch ms (business date + HHMMSS, Korea time)."""
    day, clock = value.get("bsop_date"), value.get("stck_cntg_hour")
    if day is not None and clock is not None:
        instant = day * DAY_MS + clock - KST_MS
    elif value.get("event_time") is not None:
        instant = value["event_time"]
    else:
        return None
    return instant // 1000 * 1000


def oracle_bars(trades: Iterable[Message]) -> dict[tuple[str, str, int], dict[str, Any]]:
    bars: dict[tuple[str, str, int], dict[str, Any]] = {}
    for message in trades:  # per partition in offset order = arrival order per symbol
        v = message.value
        price, volume, second = v.get("stck_prpr"), v.get("cntg_vol"), bar_second(v)
        if price is None or price <= 0 or volume is None or volume < 0 or second is None:
            continue
        side = v.get("cntg_cls_code") if v.get("cntg_cls_code") is not None else v.get("ccld_dvsn")
        key = (v["symbol"], v["venue"], second)
        bar = bars.get(key)
        if bar is None:
            bar = bars[key] = {
                "symbol": v["symbol"],
                "venue": v["venue"],
                "window_start": second,
                "window_end": second + 1000,
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": 0,
                "turnover": 0,
                "trade_count": 0,
                "buy_volume": 0,
                "sell_volume": 0,
            }
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += volume
        bar["turnover"] += price * volume
        bar["trade_count"] += 1
        if side == "1":
            bar["buy_volume"] += volume
        elif side == "5":
            bar["sell_volume"] += volume
    for bar in bars.values():
        bar["vwap"] = bar["turnover"] / bar["volume"] if bar["volume"] else None
    return bars


def final_bars(published: Iterable[Message]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last record per (symbol, venue, second) in log order (what consumers keep)."""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for message in published:
        v = message.value
        last[(v["symbol"], v["venue"], v["window_start"])] = v
    return {k: {f: x for f, x in v.items() if f != "revision"} for k, v in last.items()}


# ------------------------------------------------------------------------------ imbalance

BANDS = [(0, 1), (2_000, 5), (5_000, 10), (20_000, 50), (50_000, 100), (200_000, 500)]
BANDS.append((500_000, 1_000))


def tick_at(price: int) -> int:
    return [size for lower, size in BANDS if price >= lower][-1]


def ticks(bid: int, ask: int) -> float:
    """Step from bid to ask one KRX tick at a time (prices on the tick grid)."""
    if ask < bid:
        return -ticks(ask, bid)
    n, price = 0, bid
    while price < ask:
        price += tick_at(price)
        n += 1
    return float(n)


def level_ok(price: Any, qty: Any) -> bool:
    return price is not None and price > 0 and qty is not None and qty > 0


def imbalance_of(bid: float, ask: float) -> float | None:
    return (bid - ask) / (bid + ask) if bid + ask else None


def oracle_imbalance(books: Iterable[Message]) -> list[dict[str, Any]]:
    out = []
    for message in books:
        v = message.value
        bid, ask, bq, aq = v.get("bidp1"), v.get("askp1"), v.get("bidp_rsqn1"), v.get("askp_rsqn1")
        record: dict[str, Any] = {
            "symbol": v["symbol"],
            "venue": v["venue"],
            "event_time": v.get("event_time"),
            "received_at": v["received_at"],
            "best_bid": bid,
            "best_ask": ask,
            "best_bid_qty": bq,
            "best_ask_qty": aq,
        }
        metrics = dict.fromkeys(
            [
                "imbalance_l1",
                "imbalance_depth5",
                "imbalance_depth10",
                "imbalance_total",
                "mid",
                "microprice",
                "spread",
                "spread_ticks",
                "spread_bps",
            ]
        )
        if level_ok(bid, bq) and level_ok(ask, aq):

            def depth(side: str, n: int, v: dict[str, Any] = v) -> int:
                qty = [v.get(f"{side}p_rsqn{i}") for i in range(1, n + 1)]
                return sum(q for q in qty if q is not None and q > 0)

            tb, ta = v.get("total_bidp_rsqn"), v.get("total_askp_rsqn")
            mid = (bid + ask) / 2
            metrics.update(
                imbalance_l1=imbalance_of(bq, aq),
                imbalance_depth5=imbalance_of(depth("bid", 5), depth("ask", 5)),
                imbalance_depth10=imbalance_of(depth("bid", 10), depth("ask", 10)),
                imbalance_total=(
                    imbalance_of(tb, ta) if tb is not None and ta is not None and tb >= 0 <= ta
                    else None
                ),
                mid=mid,
                microprice=(bid * aq + ask * bq) / (bq + aq),
                spread=ask - bid,
                spread_ticks=ticks(bid, ask),
                spread_bps=(ask - bid) * 10_000 / mid,
            )  # fmt: skip
        record.update(metrics)
        out.append(record)
    return out


# -------------------------------------------------------------------------------- program


def kst_day(value: dict[str, Any]) -> int:
    if value.get("event_time") is not None:
        return (value["event_time"] + KST_MS) // DAY_MS
    return (value["received_at"] // 1000 + KST_MS) // DAY_MS


def either(net: int | None, plus: int | None, minus: int | None) -> int | None:
    if net is not None:
        return net
    return plus - minus if plus is not None and minus is not None else None


def oracle_program(
    programs: Iterable[Message],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, tuple[int, int, int, int]]]:
    """Per `symbol|venue` the records in order; per venue (day, qty, amount, symbols)."""
    state: dict[str, tuple[int, tuple[Any, ...]]] = {}
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in programs:
        v = message.value
        qty = either(v.get("ntby_cnqn"), v.get("shnu_cnqn"), v.get("seln_cnqn"))
        amount = either(v.get("ntby_tr_pbmn"), v.get("shnu_tr_pbmn"), v.get("seln_tr_pbmn"))
        if qty is None or amount is None:
            continue
        day = kst_day(v)
        values = (
            qty,
            amount,
            v.get("shnu_cnqn"),
            v.get("shnu_tr_pbmn"),
            v.get("seln_cnqn"),
            v.get("seln_tr_pbmn"),
        )
        key = f"{v['symbol']}|{v['venue']}"
        before = state.get(key)
        if before is not None and (day < before[0] or (day == before[0] and values == before[1])):
            continue
        same_day = before is not None and before[0] == day
        records[key].append(
            {
                "scope": "symbol",
                "symbol": v["symbol"],
                "venue": v["venue"],
                "business_date": day,
                "event_time": v.get("event_time"),
                "received_at": v["received_at"],
                "net_qty": qty,
                "net_amount": amount,
                "net_qty_change": qty - before[1][0] if same_day and before else None,
                "net_amount_change": amount - before[1][1] if same_day and before else None,
                "buy_qty": values[2],
                "buy_amount": values[3],
                "sell_qty": values[4],
                "sell_amount": values[5],
                "market_net_qty": None,
                "market_net_amount": None,
                "market_symbols": None,
            }
        )
        state[key] = (day, values)
    totals: dict[str, tuple[int, int, int, int]] = {}
    latest_day: dict[str, int] = {}
    for key, recs in records.items():
        venue = key.split("|")[1]
        latest_day[venue] = max(latest_day.get(venue, 0), max(r["business_date"] for r in recs))
    for venue, day in latest_day.items():
        finals = [
            [r for r in recs if r["business_date"] == day][-1]
            for key, recs in records.items()
            if key.endswith("|" + venue) and any(r["business_date"] == day for r in recs)
        ]
        totals[venue] = (
            day,
            sum(r["net_qty"] for r in finals),
            sum(r["net_amount"] for r in finals),
            len(finals),
        )
    return dict(records), totals


# --------------------------------------------------------------------------------- spread


def oracle_spread(
    krx: list[Message], nxt: list[Message], max_age_ms: float
) -> list[dict[str, Any]]:
    """Each book update paired with the other venue's last quote received at or before it."""
    by_symbol: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for message in [*krx, *nxt]:
        by_symbol[(message.value["symbol"], message.value["venue"])].append(message.value)
    out = []
    for (symbol, venue), triggers in by_symbol.items():
        others = by_symbol.get((symbol, "NXT" if venue == "KRX" else "KRX"), [])
        for trigger in triggers:
            before = [o for o in others if o["received_at"] <= trigger["received_at"]]
            if not before:
                continue
            other = before[-1]
            k, n = (trigger, other) if venue == "KRX" else (other, trigger)
            if not all(level_ok(b["bidp1"], b["bidp_rsqn1"]) for b in (k, n)):
                continue
            if not all(level_ok(b["askp1"], b["askp_rsqn1"]) for b in (k, n)):
                continue
            age_ms = abs(k["received_at"] - n["received_at"]) / 1000
            if age_ms > max_age_ms:
                continue
            krx_mid, nxt_mid = (k["bidp1"] + k["askp1"]) / 2, (n["bidp1"] + n["askp1"]) / 2
            out.append(
                {
                    "symbol": symbol,
                    "trigger_venue": venue,
                    "krx_bid": k["bidp1"],
                    "krx_ask": k["askp1"],
                    "krx_mid": krx_mid,
                    "nxt_bid": n["bidp1"],
                    "nxt_ask": n["askp1"],
                    "nxt_mid": nxt_mid,
                    "spread_krw": nxt_mid - krx_mid,
                    "spread_bps": (nxt_mid - krx_mid) / krx_mid * 10_000,
                    "age_ms": age_ms,
                    "crossed": k["bidp1"] > n["askp1"] or n["bidp1"] > k["askp1"],
                    "krx_event_time": k.get("event_time"),
                    "nxt_event_time": n.get("event_time"),
                    "krx_received_at": k["received_at"],
                    "nxt_received_at": n["received_at"],
                }
            )
    return out


# ------------------------------------------------------------------------------- compare


def _split(record: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[float, ...]]:
    exact = tuple(sorted((k, v) for k, v in record.items() if not isinstance(v, float)))
    floats = tuple(v for _, v in sorted((k, v) for k, v in record.items() if isinstance(v, float)))
    return exact, floats


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


def compare(
    actual: Iterable[dict[str, Any]], expected: Iterable[dict[str, Any]], *, duplicates_ok: bool
) -> None:
    """Same records (floats to 1e-9); with `duplicates_ok`, repeats in `actual` are allowed."""
    groups_actual: dict[tuple[Any, ...], list[tuple[float, ...]]] = defaultdict(list)
    groups_expected: dict[tuple[Any, ...], list[tuple[float, ...]]] = defaultdict(list)
    for record in actual:
        exact, floats = _split(record)
        groups_actual[exact].append(floats)
    for record in expected:
        exact, floats = _split(record)
        groups_expected[exact].append(floats)
    missing = [k for k in groups_expected if k not in groups_actual]
    extra = [k for k in groups_actual if k not in groups_expected]
    assert not missing, f"{len(missing)} expected records not published, e.g. {missing[:2]}"
    assert not extra, f"{len(extra)} published records not expected, e.g. {extra[:2]}"
    for key, want in groups_expected.items():
        got = groups_actual[key]
        for floats in want:
            assert any(_close(floats, g) for g in got), f"floats differ for {key}: {got} {want}"
        for floats in got:
            assert any(_close(floats, w) for w in want), f"floats differ for {key}: {got} {want}"
        if not duplicates_ok:
            assert len(got) == len(want), f"{key} published {len(got)}x, expected {len(want)}x"


def distinct_in_order(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with repeats removed, first occurrence kept (a replay repeats records)."""
    seen: Counter[str] = Counter()
    out = []
    for record in records:
        marker = json.dumps(record, sort_keys=True)
        if not seen[marker]:
            out.append(record)
        seen[marker] += 1
    return out
