"""The simulator's `refuse_subscribe` fault: KIS's own error replies, nothing registered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from producer.system import KisError, KisErrorCode, SubscribeAck, parse_system
from simulator.cli import build_config, sim
from simulator.faults import FaultError, Faults
from simulator.protocol import Registry, Session
from simulator.spec import load_layouts


def registry(faults: Faults) -> tuple[Registry, str]:
    reg = Registry(
        load_layouts(),
        app_keys={},
        approval_ttl=60.0,
        max_subscriptions=41,
        refusal=faults.refusal,
    )
    reply, _ = reg.approve({"grant_type": "client_credentials", "appkey": "k", "secretkey": "s"})
    return reg, reply["approval_key"]


def subscribe(reg: Registry, session: Session, key: str, tr_id: str, tr_key: str) -> Any:
    header = {"approval_key": key, "custtype": "P", "tr_type": "1", "content-type": "utf-8"}
    text = json.dumps({"header": header, "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}}})
    reply = reg.request(session, text)
    assert reply is not None
    return parse_system(reply)


def test_first_n_attempts_of_a_registration_get_max_subscribe_over_then_it_registers() -> None:
    faults = Faults()
    faults.configure({"refuse_subscribe": {"tr_id": "H0STCNT0", "tr_key": "005930", "times": 2}}, 0)
    reg, key = registry(faults)
    session = Session("s1")
    for _ in range(2):
        refused = subscribe(reg, session, key, "H0STCNT0", "005930")
        assert isinstance(refused, KisError)
        assert refused.code is KisErrorCode.MAX_SUBSCRIBE_OVER and refused.msg_cd == "OPSP0008"
        assert (refused.tr_id, refused.tr_key) == ("H0STCNT0", "005930")
        assert session.subs == {} and ("H0STCNT0", "005930") not in reg.subscribers
    other = subscribe(reg, session, key, "H0STCNT0", "000660")  # another key: not matched
    assert isinstance(other, SubscribeAck) and other.subscribed
    accepted = subscribe(reg, session, key, "H0STCNT0", "005930")
    assert isinstance(accepted, SubscribeAck) and accepted.subscribed
    assert ("H0STCNT0", "005930") in session.subs
    snapshot = faults.snapshot(0)
    assert snapshot["subscribe_refused"] == 2
    assert snapshot["refuse_subscribe"][0]["refused"] == 2


def test_times_count_per_registration_and_wildcards_match_any() -> None:
    faults = Faults()
    faults.configure({"refuse_subscribe": {"times": 1}}, 0)
    reg, key = registry(faults)
    session = Session("s1")
    for tr_id, tr_key in (("H0STCNT0", "005930"), ("H0STASP0", "005930"), ("H0STCNT0", "000660")):
        assert isinstance(subscribe(reg, session, key, tr_id, tr_key), KisError)
        assert isinstance(subscribe(reg, session, key, tr_id, tr_key), SubscribeAck)
    assert faults.subscribe_refused == 3


def test_invalid_tr_key_reply_is_the_parse_error_kis_sends() -> None:
    faults = Faults()
    faults.configure(
        {"refuse_subscribe": {"tr_id": "H0STASP0", "times": 5, "reply": "invalid_tr_key"}}, 0
    )
    reg, key = registry(faults)
    refused = subscribe(reg, Session("s1"), key, "H0STASP0", "005930")
    assert isinstance(refused, KisError) and refused.code is KisErrorCode.INVALID_TR_KEY
    assert refused.rt_cd == "9" and refused.msg1 == "JSON PARSING ERROR : invalid tr_key"


def test_rate_refuses_about_that_share_and_clear_stops_refusing() -> None:
    faults = Faults(seed=3)
    faults.configure({"refuse_subscribe": {"rate": 0.5}}, 0)
    outcomes = [faults.refusal("H0STCNT0", "005930") for _ in range(400)]
    assert set(outcomes) == {"max_subscribe", None}
    assert 150 < outcomes.count("max_subscribe") < 250
    faults.configure({"clear": True}, 0)
    assert faults.refusal("H0STCNT0", "005930") is None and faults.refusals == []


def test_null_clears_rules_and_a_list_adds_several() -> None:
    faults = Faults()
    faults.configure({"refuse_subscribe": [{"tr_id": "H0STCNT0"}, {"tr_key": "000660"}]}, 0)
    assert len(faults.refusals) == 2
    assert faults.refusal("H0STASP0", "000660") == "max_subscribe"
    faults.configure({"refuse_subscribe": None}, 0)
    assert faults.refusals == []


@pytest.mark.parametrize(
    "spec",
    [
        "H0STCNT0",
        {"times": 0},
        {"times": True},
        {"rate": 0},
        {"rate": 1.5},
        {"times": 1, "rate": 0.5},
        {"reply": "busy"},
        {"tr_id": ""},
        {"tr_key": 5930},
        {"tr_id": "H0STCNT0", "surprise": 1},
        [{"times": 1}, {"times": -1}],
    ],
)
def test_bad_refusal_commands_are_rejected_and_change_nothing(spec: Any) -> None:
    faults = Faults()
    with pytest.raises(FaultError, match="refuse_subscribe"):
        faults.configure({"refuse_subscribe": spec}, 0)
    assert faults.refusals == []


def test_cli_flag_builds_the_rules() -> None:
    ctx = sim.make_context(
        "sim",
        ["--refuse-subscribe", "H0STCNT0:005930:3", "--refuse-subscribe", "*:000660",
         "--refuse-subscribe", "H0STASP0"],
    )  # fmt: skip
    config = build_config(dict(ctx.params))
    assert config.faults["refuse_subscribe"] == [
        {"tr_id": "H0STCNT0", "tr_key": "005930", "times": 3},
        {"tr_key": "000660", "times": 1},
        {"tr_id": "H0STASP0", "times": 1},
    ]
    faults = Faults()
    faults.configure(config.faults, 0)
    assert len(faults.refusals) == 3


@pytest.mark.parametrize("value", ["H0STCNT0:005930:0", "H0STCNT0::2", "a:b:c:d", "X:Y:z"])
def test_cli_flag_rejects_bad_specs(value: str) -> None:
    from click.testing import CliRunner

    from kis_stream.cli import main

    assert CliRunner().invoke(main, ["sim", "--refuse-subscribe", value]).exit_code == 2
