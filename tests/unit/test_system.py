"""JSON system messages: acknowledgements, heartbeats and every error KIS is known to send.

Message shapes follow shared/kis/PROTOCOL.md section 3 (texts seen in real traffic) and the
broker's sample code (koreainvestment/open-trading-api, websocket/python).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.system import (
    KisError,
    KisErrorCode,
    PingPong,
    SubscribeAck,
    classify_error,
    parse_system,
)

KEY = "abcdefghijklmnopqrstuvwxyz012345"
IV = "0123456789abcdef"


def _reply(
    rt_cd: str,
    msg_cd: str,
    msg1: str,
    *,
    tr_id: str | None = "H0STCNT0",
    tr_key: str = "005930",
    encrypt: str = "N",
    output: dict[str, str] | None = None,
) -> str:
    body: dict[str, object] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    doc: dict[str, object] = {"body": body}
    if tr_id is not None:
        doc["header"] = {"tr_id": tr_id, "tr_key": tr_key, "encrypt": encrypt}
    return json.dumps(doc)


def test_subscribe_success_carries_key_and_iv() -> None:
    msg = parse_system(
        _reply(
            "0",
            "OPSP0000",
            "SUBSCRIBE SUCCESS",
            tr_id="H0STCNI0",
            tr_key="myhtsid",
            encrypt="Y",
            output={"iv": IV, "key": KEY},
        )
    )
    assert msg == SubscribeAck("H0STCNI0", "myhtsid", True, True, KEY, IV, "OPSP0000", msg.msg1)
    assert msg.msg1 == "SUBSCRIBE SUCCESS"


def test_plain_subscribe_and_unsubscribe() -> None:
    sub = parse_system(_reply("0", "OPSP0000", "SUBSCRIBE SUCCESS", output={"iv": IV, "key": KEY}))
    assert isinstance(sub, SubscribeAck)
    assert (sub.subscribed, sub.encrypt, sub.tr_key) == (True, False, "005930")
    unsub = parse_system(_reply("0", "OPSP0000", "UNSUBSCRIBE SUCCESS"))
    assert isinstance(unsub, SubscribeAck)
    assert unsub.subscribed is False
    assert unsub.key is None and unsub.iv is None


def test_secrets_are_masked_in_repr() -> None:
    ack = parse_system(_reply("0", "OPSP0000", "SUBSCRIBE SUCCESS", output={"iv": IV, "key": KEY}))
    for text in (repr(ack), str(ack), f"{ack}"):
        assert KEY not in text and IV not in text
        assert "abcd***" in text


def test_pingpong_keeps_raw_text_for_the_echo() -> None:
    raw = '{"header":{"tr_id":"PINGPONG","datetime":"20260914093015"}}'
    msg = parse_system(raw)
    assert msg == PingPong(raw=raw, datetime="20260914093015")
    assert parse_system(raw.encode()) == msg


@pytest.mark.parametrize(
    ("rt_cd", "msg_cd", "msg1", "code"),
    [
        ("1", "OPSP0002", "ALREADY IN SUBSCRIBE", KisErrorCode.ALREADY_SUBSCRIBED),
        ("1", "OPSP0008", "MAX SUBSCRIBE OVER", KisErrorCode.MAX_SUBSCRIBE_OVER),
        ("1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)", KisErrorCode.NOT_FOUND),
        ("1", "OPSP0011", "invalid appkey : NOT FOUND", KisErrorCode.INVALID_APPKEY),
        ("1", "OPSP0011", "invalid approval : 2a5e1f0c-xx", KisErrorCode.INVALID_APPROVAL),
        ("9", "OPSP8996", "ALREADY IN USE appkey", KisErrorCode.APPKEY_IN_USE),
        ("9", "OPSP9999", "JSON PARSING ERROR : invalid tr_key", KisErrorCode.INVALID_TR_KEY),
        ("9", "OPSP9999", "JSON PARSING ERROR : header not found", KisErrorCode.HEADER_NOT_FOUND),
        ("1", "OPSP0002", "", KisErrorCode.ALREADY_SUBSCRIBED),
        ("1", "OPSP1234", "something new", KisErrorCode.OTHER),
    ],
)
def test_errors_are_classified(rt_cd: str, msg_cd: str, msg1: str, code: KisErrorCode) -> None:
    msg = parse_system(_reply(rt_cd, msg_cd, msg1))
    assert isinstance(msg, KisError)
    assert (msg.code, msg.rt_cd, msg.msg_cd) == (code, rt_cd, msg_cd)
    assert classify_error(msg_cd, msg1) is code


def test_error_with_null_tr_id_or_no_header() -> None:
    msg = parse_system(
        _reply("9", "OPSP9999", "JSON PARSING ERROR : invalid tr_key", tr_id="(null)")
    )
    assert isinstance(msg, KisError) and msg.tr_id is None
    msg = parse_system(_reply("9", "OPSP9999", "JSON PARSING ERROR : header not found", tr_id=None))
    assert isinstance(msg, KisError)
    assert (msg.code, msg.tr_id, msg.tr_key) == (KisErrorCode.HEADER_NOT_FOUND, None, None)


def test_echoed_approval_key_is_masked() -> None:
    approval = "2a5e1f0c-1234-5678-9abc-def012345678"
    msg = parse_system(_reply("1", "OPSP0011", f"invalid approval : {approval}"))
    assert isinstance(msg, KisError)
    assert approval not in msg.msg1 and approval not in repr(msg)
    assert msg.msg1.startswith("invalid approval : 2a5e")


@pytest.mark.parametrize(
    "text",
    ["", "{", "[1,2]", "null", '{"header": 5}', '{"body": {"rt_cd": "0"}}', "{}", "\x00\xff"],
)
def test_malformed_messages_are_other_errors(text: str) -> None:
    msg = parse_system(text)
    assert isinstance(msg, KisError) and msg.code is KisErrorCode.OTHER


def test_success_text_without_tr_id_is_not_an_ack() -> None:
    msg = parse_system(_reply("0", "OPSP0000", "SUBSCRIBE SUCCESS", tr_id=None))
    assert isinstance(msg, KisError)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_never_raises(text: str | bytes) -> None:
    assert isinstance(parse_system(text), SubscribeAck | PingPong | KisError)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )
)
def test_never_raises_on_any_json(doc: object) -> None:
    for wrapped in (doc, {"header": doc, "body": doc}, {"body": {"output": doc, "rt_cd": "0"}}):
        assert isinstance(parse_system(json.dumps(wrapped)), SubscribeAck | PingPong | KisError)
