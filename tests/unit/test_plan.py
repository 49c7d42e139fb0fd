"""Subscription plan: symbols x TR groups x venues, sharding, capacity errors."""

from __future__ import annotations

import pytest

from producer.plan import PlanError, Subscription, build_subscriptions, shard


def test_groups_and_venues_expand_to_the_catalogue_tr_ids() -> None:
    subs = build_subscriptions(
        symbols=["005930", "000660"], groups=["trades", "books"], venues=["KRX", "NXT"]
    )
    assert set(subs) == {
        Subscription(tr, sym)
        for sym in ("005930", "000660")
        for tr in ("H0STCNT0", "H0STASP0", "H0NXCNT0", "H0NXASP0")
    }
    # A symbol's registrations are adjacent, so sharding keeps a symbol on one session.
    assert [s.tr_key for s in subs[:4]] == ["005930"] * 4


def test_every_group_has_a_tr_for_krx() -> None:
    groups = ["trades", "books", "program", "expected", "status"]
    subs = build_subscriptions(symbols=["005930"], groups=groups, venues=["KRX"])
    assert {s.tr_id for s in subs} == {"H0STCNT0", "H0STASP0", "H0STPGM0", "H0STANC0", "H0STMKO0"}


def test_notices_subscribe_the_hts_id_once_per_market() -> None:
    subs = build_subscriptions(
        symbols=["005930"],
        overseas_symbols=["DNASAAPL"],
        groups=["trades", "notices"],
        venues=["KRX", "OVERSEAS"],
        hts_id="myhts",
    )
    assert Subscription("H0STCNI0", "myhts") in subs
    assert Subscription("H0GSCNI0", "myhts") in subs
    assert Subscription("HDFSCNT0", "DNASAAPL") in subs
    assert Subscription("H0STCNT0", "005930") in subs
    assert len(subs) == 4


def test_paper_uses_paper_tr_ids_and_refuses_trs_without_one() -> None:
    subs = build_subscriptions(
        symbols=["005930"], groups=["trades", "notices"], venues=["KRX"], hts_id="h", paper=True
    )
    assert Subscription("H0STCNI9", "h") in subs
    with pytest.raises(PlanError, match="no paper-trading variant"):
        build_subscriptions(symbols=["005930"], groups=["program"], venues=["KRX"], paper=True)


def test_shard_spreads_evenly_over_as_few_sessions_as_needed() -> None:
    subs = [Subscription("H0STCNT0", f"{i:06d}") for i in range(83)]
    sessions = shard(subs, sessions_available=5, per_session=41)
    assert [len(s.subscriptions) for s in sessions] == [28, 28, 27]
    assert [s.name for s in sessions] == ["s0", "s1", "s2"]
    assert [x for s in sessions for x in s.subscriptions] == subs


def test_plan_over_capacity_fails_with_a_clear_message() -> None:
    subs = [Subscription("H0STCNT0", f"{i:06d}") for i in range(83)]
    with pytest.raises(PlanError) as err:
        shard(subs, sessions_available=2, per_session=41)
    message = str(err.value)
    assert "83 registrations" in message and "82" in message and "add 1 app key" in message


def test_empty_plan_is_an_error() -> None:
    with pytest.raises(PlanError, match="empty"):
        shard([], sessions_available=1, per_session=41)
