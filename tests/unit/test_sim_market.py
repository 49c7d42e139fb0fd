"""The simulated market: determinism and the sanity a downstream computation relies on."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest

from simulator.market import GenRecord, Market, MarketConfig
from simulator.ticks import is_valid_price

DATE = dt.date(2026, 10, 5)
SYMBOLS = ("005930", "000660")
H = 3600


def hms(text: str) -> float:
    hh, mm, ss = (int(x) for x in text.split(":"))
    return hh * H + mm * 60 + ss


def make_market(start: str = "09:00:00", seed: int = 3, **config: object) -> Market:
    cfg = MarketConfig(seed=seed, symbols=SYMBOLS, overseas=("DNASAAPL",), **config)  # type: ignore[arg-type]
    market = Market(cfg, date=DATE, start=hms(start))
    for tr_id, layout in market.layouts.items():
        if layout.kind == "notice":
            market.add_interest(tr_id, "hts01")
        elif layout.venue == "OVERSEAS":
            market.add_interest(tr_id, "DNASAAPL")
        else:
            for code in SYMBOLS:
                market.add_interest(tr_id, code)
    return market


def named(market: Market, rec: GenRecord) -> dict[str, str]:
    return dict(zip(market.layouts[rec.tr_id].names, rec.fields, strict=True))


def of(
    market: Market, records: list[GenRecord], tr_id: str, key: str = "005930"
) -> list[dict[str, str]]:
    return [named(market, r) for r in records if r.tr_id == tr_id and r.key == key]


@pytest.fixture(scope="module")
def session_records() -> tuple[Market, list[GenRecord]]:
    """25 minutes of continuous trading, every TR wanted."""
    market = make_market("09:00:00")
    return market, market.advance(hms("09:25:00"))


def test_same_seed_gives_the_same_records_whatever_the_pull_pace() -> None:
    one = make_market(seed=11)
    all_at_once = one.advance(hms("09:05:00"))
    other = make_market(seed=11)
    stepped: list[GenRecord] = []
    t = hms("09:00:00")
    while t < hms("09:05:00"):
        t = min(t + 0.37, hms("09:05:00"))
        stepped.extend(other.advance(t))
    assert len(all_at_once) > 1000
    assert [(r.tr_id, r.key, r.fields) for r in all_at_once] == [
        (r.tr_id, r.key, r.fields) for r in stepped
    ]


def test_a_different_seed_gives_a_different_market() -> None:
    a = make_market(seed=1).advance(hms("09:01:00"))
    b = make_market(seed=2).advance(hms("09:01:00"))
    assert [r.fields for r in a[:50]] != [r.fields for r in b[:50]]


def test_every_record_has_the_catalogue_width(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    market, records = session_records
    seen = {r.tr_id for r in records}
    assert {"H0STCNT0", "H0NXCNT0", "H0UNCNT0", "H0STASP0", "H0NXASP0", "H0UNASP0",
            "H0STPGM0", "H0NXPGM0", "H0UNPGM0", "HDFSCNT0", "HDFSASP0",
            "H0STCNI0", "H0GSCNI0"} <= seen  # fmt: skip
    for r in records:
        assert len(r.fields) == len(market.layouts[r.tr_id].names), r.tr_id
    assert len(market.layouts["H0STCNT0"].names) == 47
    assert len(market.layouts["H0STASP0"].names) == 63


def test_record_ids_are_unique_and_increasing(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    _, records = session_records
    ids = [r.id for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("tr_id", ["H0STASP0", "H0NXASP0"])
def test_venue_books_are_never_crossed_and_sit_on_the_tick_grid(
    session_records: tuple[Market, list[GenRecord]], tr_id: str
) -> None:
    market, records = session_records
    books = of(market, records, tr_id) + of(market, records, tr_id, "000660")
    assert len(books) > 100
    for b in books:
        asks = [int(b[f"ASKP{i}"]) for i in range(1, 11)]
        bids = [int(b[f"BIDP{i}"]) for i in range(1, 11)]
        assert bids[0] < asks[0]
        assert asks == sorted(asks) and len(set(asks)) == 10
        assert bids == sorted(bids, reverse=True) and len(set(bids)) == 10
        assert all(is_valid_price(p) for p in asks + bids)
        assert all(
            int(b[f"ASKP_RSQN{i}"]) > 0 and int(b[f"BIDP_RSQN{i}"]) > 0 for i in range(1, 11)
        )
        assert int(b["TOTAL_ASKP_RSQN"]) == sum(int(b[f"ASKP_RSQN{i}"]) for i in range(1, 11))


@pytest.mark.parametrize("tr_id", ["H0STCNT0", "H0NXCNT0"])
def test_trades_happen_inside_the_book_with_a_side(
    session_records: tuple[Market, list[GenRecord]], tr_id: str
) -> None:
    market, records = session_records
    trades = of(market, records, tr_id)
    assert len(trades) > 50
    side_field = "CCLD_DVSN" if tr_id == "H0STCNT0" else "CNTG_CLS_CODE"
    sides = {t[side_field] for t in trades}
    assert sides == {"1", "5"}
    for t in trades:
        price, ask, bid = int(t["STCK_PRPR"]), int(t["ASKP1"]), int(t["BIDP1"])
        assert is_valid_price(price)
        if t[side_field] == "1":
            assert bid < price <= ask
        else:
            assert bid <= price < ask


@pytest.mark.parametrize("tr_id", ["H0STCNT0", "H0NXCNT0", "H0UNCNT0"])
def test_cumulative_trade_fields_are_consistent(
    session_records: tuple[Market, list[GenRecord]], tr_id: str
) -> None:
    market, records = session_records
    prev_close = market.symbols["005930"].ref.prev_close
    acml_vol = acml_amount = 0
    trades = of(market, records, tr_id)
    opening = int(trades[0]["STCK_PRPR"])
    for t in trades:
        price, qty = int(t["STCK_PRPR"]), int(t["CNTG_VOL"])
        acml_vol += qty
        acml_amount += price * qty
        assert int(t["ACML_VOL"]) == acml_vol
        assert int(t["ACML_TR_PBMN"]) == acml_amount
        assert int(t["STCK_OPRC"]) == opening
        assert int(t["STCK_LWPR"]) <= price <= int(t["STCK_HGPR"])
        assert int(t["PRDY_VRSS"]) == price - prev_close
        expected_sign = "2" if price > prev_close else "3" if price == prev_close else "5"
        assert t["PRDY_VRSS_SIGN"] == expected_sign
        assert int(t["SELN_CNTG_SMTN"]) + int(t["SHNU_CNTG_SMTN"]) == acml_vol
        assert t["BSOP_DATE"] == "20261005"


def test_unified_tape_is_the_sum_of_both_venues(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    market, records = session_records
    last = {tr: of(market, records, tr)[-1] for tr in ("H0STCNT0", "H0NXCNT0", "H0UNCNT0")}
    assert int(last["H0UNCNT0"]["ACML_VOL"]) == int(last["H0STCNT0"]["ACML_VOL"]) + int(
        last["H0NXCNT0"]["ACML_VOL"]
    )
    pgm = {tr: of(market, records, tr)[-1] for tr in ("H0STPGM0", "H0NXPGM0", "H0UNPGM0")}
    for f in ("SELN_CNQN", "SHNU_CNQN", "SELN_TR_PBMN", "SHNU_TR_PBMN"):
        assert int(pgm["H0UNPGM0"][f]) == int(pgm["H0STPGM0"][f]) + int(pgm["H0NXPGM0"][f])


@pytest.mark.parametrize("tr_id", ["H0STPGM0", "H0NXPGM0", "H0UNPGM0"])
def test_program_counters_are_cumulative(
    session_records: tuple[Market, list[GenRecord]], tr_id: str
) -> None:
    market, records = session_records
    rows = of(market, records, tr_id)
    assert len(rows) > 5
    prev = {f: 0 for f in ("SELN_CNQN", "SHNU_CNQN", "SELN_TR_PBMN", "SHNU_TR_PBMN")}
    for r in rows:
        for f in prev:
            assert int(r[f]) >= prev[f]
            prev[f] = int(r[f])
        assert int(r["NTBY_CNQN"]) == int(r["SHNU_CNQN"]) - int(r["SELN_CNQN"])
        assert int(r["NTBY_TR_PBMN"]) == int(r["SHNU_TR_PBMN"]) - int(r["SELN_TR_PBMN"])


def test_nxt_tracks_krx_with_a_divergence_that_sometimes_crosses(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    market, records = session_records
    mids: dict[str, float] = {}
    diffs: list[float] = []
    for r in records:
        if r.key == "005930" and r.tr_id in ("H0STASP0", "H0NXASP0"):
            b = named(market, r)
            mids[r.tr_id] = (int(b["ASKP1"]) + int(b["BIDP1"])) / 2
            if len(mids) == 2:
                diffs.append(mids["H0NXASP0"] - mids["H0STASP0"])
    assert diffs
    krx_price = mids["H0STASP0"]
    assert max(abs(d) for d in diffs) < krx_price * 0.01
    assert sum(1 for d in diffs if d != 0) > len(diffs) / 4
    assert any(d > 0 for d in diffs) and any(d < 0 for d in diffs)


def test_prices_move_over_a_session(session_records: tuple[Market, list[GenRecord]]) -> None:
    market, records = session_records
    prices = {int(t["STCK_PRPR"]) for t in of(market, records, "H0STCNT0")}
    assert len(prices) >= 5


def test_opening_auction_publishes_expected_prices_then_uncrosses_at_nine() -> None:
    market = make_market("08:29:50")
    records = market.advance(hms("09:00:30"))
    expected = of(market, records, "H0STANC0")
    assert expected and all("083000" <= e["STCK_CNTG_HOUR"] < "090000" for e in expected)
    assert {e["HOUR_CLS_CODE"] for e in expected} == {"B"}
    assert of(market, records, "H0UNANC0")
    books = [b for b in of(market, records, "H0STASP0") if b["BSOP_HOUR"] < "090000"]
    assert any(b["ASKP1"] == "0" or b["BIDP1"] == "0" for b in books), "no one-sided book"
    assert any(int(b["ANTC_CNPR"]) > 0 for b in books)
    for b in books:
        if b["ASKP1"] != "0" and b["BIDP1"] != "0":
            assert int(b["BIDP1"]) < int(b["ASKP1"])
    trades = of(market, records, "H0STCNT0")
    assert trades[0]["STCK_CNTG_HOUR"] == "090000"
    last_expected = [e for e in expected if int(e["STCK_PRPR"]) > 0][-1]
    assert trades[0]["STCK_PRPR"] == last_expected["STCK_PRPR"]
    assert trades[0]["CNTG_VOL"] == last_expected["CNTG_VOL"]
    assert trades[0]["STCK_OPRC"] == trades[0]["STCK_PRPR"]
    status_times = [s_ for s_ in of(market, records, "H0STMKO0")]
    assert len(status_times) == 2  # 08:30 auction start, 09:00 continuous


def test_closing_auction_halts_krx_trading_and_sets_the_close() -> None:
    market = make_market("15:10:00")
    records = market.advance(hms("15:31:00"))
    trades = of(market, records, "H0STCNT0")
    assert not [t for t in trades if "152000" <= t["STCK_CNTG_HOUR"] < "153000"]
    closing = [t for t in trades if t["STCK_CNTG_HOUR"] == "153000"]
    assert len(closing) == 1 and closing[0]["MARKET_CLS_CODE"] == "5"
    assert not [t for t in trades if t["STCK_CNTG_HOUR"] > "153000"]
    expected = of(market, records, "H0STANC0")
    assert expected and {e["HOUR_CLS_CODE"] for e in expected} == {"A"}
    # NXT keeps trading in its after-market from 15:30
    assert [t for t in of(market, records, "H0NXCNT0") if t["STCK_CNTG_HOUR"] > "153000"]


def test_nxt_publishes_indicative_prices_between_its_sessions() -> None:
    market = make_market("08:49:00")
    records = market.advance(hms("09:01:00"))
    indicative = of(market, records, "H0NXANC0")
    assert indicative
    assert all("085000" <= r["STCK_CNTG_HOUR"] < "090030" for r in indicative)
    assert not [
        t for t in of(market, records, "H0NXCNT0") if "085000" <= t["STCK_CNTG_HOUR"] < "090030"
    ]


def test_a_volatility_interruption_halts_then_resumes() -> None:
    market = make_market("10:00:00", vi_seconds=60.0)
    market.advance(hms("10:00:10"))
    assert market.trigger_vi("005930")
    started = market.take_pending()
    records = market.advance(hms("10:02:00"))
    status = [
        named(market, r) for r in started + records if r.tr_id == "H0STMKO0" and r.key == "005930"
    ]
    assert [s["VI_CLS_CODE"] for s in status] == ["Y", "N"]
    during = [t for t in of(market, records, "H0STCNT0") if t["STCK_CNTG_HOUR"] < "100110"]
    assert len(during) <= 1  # only the uncross at the end of the VI
    assert {e["HOUR_CLS_CODE"] for e in of(market, records, "H0STANC0")} == {"C"}


def test_a_big_move_triggers_vi_by_itself() -> None:
    market = make_market("09:00:00", vi_pct=0.2, daily_vol=0.2)
    records = market.advance(hms("09:12:00"))
    vis = [named(market, r)["VI_CLS_CODE"] for r in records if r.tr_id == "H0STMKO0"]
    assert "Y" in vis and "N" in vis


def test_overseas_records_use_four_decimals_and_signed_rates(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    market, records = session_records
    trades = of(market, records, "HDFSCNT0", "DNASAAPL")
    assert trades
    for t in trades:
        assert len(t["LAST"].split(".")[1]) == 4
        assert t["RATE"][0] in "+-"
        assert float(t["PBID"]) < float(t["PASK"])
        assert float(t["LOW"]) <= float(t["LAST"]) <= float(t["HIGH"])
    books = of(market, records, "HDFSASP0", "DNASAAPL")
    assert all(float(b["PBID1"]) < float(b["PASK1"]) for b in books)


def test_own_orders_are_accepted_then_filled(
    session_records: tuple[Market, list[GenRecord]],
) -> None:
    market, records = session_records
    notices = of(market, records, "H0STCNI0", "hts01")
    assert notices
    orders: dict[str, list[dict[str, str]]] = defaultdict(list)
    for n in notices:
        orders[n["ODER_NO"]].append(n)
    for flow in orders.values():
        assert flow[0]["CNTG_YN"] == "1"
        fills = flow[1:]
        assert all(f["CNTG_YN"] == "2" and int(f["CNTG_UNPR"]) > 0 for f in fills)
        assert sum(int(f["CNTG_QTY"]) for f in fills) <= int(flow[0]["ODER_QTY"])
    assert any(len(flow) > 1 for flow in orders.values())
    assert of(market, records, "H0GSCNI0", "hts01")


def test_records_are_formatted_only_for_wanted_keys() -> None:
    market = Market(
        MarketConfig(seed=1, symbols=SYMBOLS, overseas=()), date=DATE, start=hms("09:00:00")
    )
    market.add_interest("H0STCNT0", "005930")
    records = market.advance(hms("09:05:00"))
    assert records and {(r.tr_id, r.key) for r in records} == {("H0STCNT0", "005930")}


def test_load_burst_produces_the_requested_live_records() -> None:
    market = make_market()
    live = {("H0STCNT0", "005930"), ("H0STASP0", "005930"), ("H0STASP0", "000660")}
    out = market.burst(500, hms("09:00:01"), live)
    assert sum(1 for r in out if (r.tr_id, r.key) in live) >= 500
