"""The simulator's wire format, checked against the project's own decoder."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from producer.frames import FrameDecoder
from producer.records import DecodeError, Record
from simulator import wire
from simulator.faults import MALFORMED_KINDS, FaultError, Faults
from simulator.spec import canonical_tr_id, load_layouts

DATE = dt.date(2026, 10, 5)


def trade_row(price: str = "71000") -> list[str]:
    names = load_layouts()["H0STCNT0"].names
    values = {"MKSC_SHRN_ISCD": "005930", "STCK_CNTG_HOUR": "093001", "STCK_PRPR": price,
              "BSOP_DATE": "20261005", "CNTG_VOL": "10"}  # fmt: skip
    return [values.get(n, "") for n in names]


def decode(frame: str | bytes, decoder: FrameDecoder | None = None) -> list[Record] | DecodeError:
    decoder = decoder or FrameDecoder(business_date=lambda: DATE)
    return decoder.decode(frame, received_at=0)


def test_plain_frame_layout_and_multi_record_count() -> None:
    rows = [trade_row("71000"), trade_row("71100"), trade_row("71200")]
    frame = wire.data_frame("H0STCNT0", rows)
    enc, tr_id, count, payload = frame.split("|", 3)
    assert (enc, tr_id, count) == ("0", "H0STCNT0", "003")
    assert len(payload.split("^")) == 3 * 47
    records = decode(frame)
    assert isinstance(records, list)
    assert [r.fields["stck_prpr"] for r in records] == [71000, 71100, 71200]
    assert [r.index for r in records] == [0, 1, 2]


def test_encrypted_frame_round_trips_through_the_decoder() -> None:
    key, iv = wire.new_cipher_params()
    assert len(key) == 32 and len(iv) == 16
    names = load_layouts()["H0STCNI0"].names
    values = {"CUST_ID": "hts01", "STCK_SHRN_ISCD": "005930", "CNTG_QTY": "10"}
    row = [values.get(n, "") for n in names]
    frame = wire.encrypted_frame("H0STCNI9", [row, row], key, iv)
    assert frame.startswith("1|H0STCNI9|002|")
    assert "005930" not in frame  # the payload is ciphertext
    decoder = FrameDecoder(business_date=lambda: DATE)
    decoder.set_key("H0STCNI9", key, iv)
    records = decode(frame, decoder)
    assert isinstance(records, list) and len(records) == 2
    assert records[0].fields["cust_id"] == "hts01"
    wrong = FrameDecoder(business_date=lambda: DATE)
    wrong.set_key("H0STCNI9", *wire.new_cipher_params())
    assert isinstance(decode(frame, wrong), DecodeError)


def test_acknowledgement_shapes() -> None:
    ok = orjson.loads(wire.ack("H0STCNI0", "hts01", wire.SUBSCRIBED, encrypt=True,
                               cipher=("k" * 32, "i" * 16)))  # fmt: skip
    assert ok == {
        "header": {"tr_id": "H0STCNI0", "tr_key": "hts01", "encrypt": "Y"},
        "body": {"rt_cd": "0", "msg_cd": "OPSP0000", "msg1": "SUBSCRIBE SUCCESS",
                 "output": {"iv": "i" * 16, "key": "k" * 32}},
    }  # fmt: skip
    busy = orjson.loads(wire.ack("H0STCNT0", "005930", wire.APPKEY_IN_USE))
    assert busy["body"] == {"rt_cd": "9", "msg_cd": "OPSP8996", "msg1": "ALREADY IN USE appkey"}
    assert busy["header"]["encrypt"] == "N"
    headless = orjson.loads(wire.error("JSON PARSING ERROR : header not found", tr_id=None))
    assert "header" not in headless and headless["body"]["rt_cd"] == "9"


def test_pingpong_shape_and_secret_masking() -> None:
    assert orjson.loads(wire.pingpong("20261005093000")) == {
        "header": {"tr_id": "PINGPONG", "datetime": "20261005093000"}
    }
    secret = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
    assert secret not in wire.mask(secret) and wire.mask(secret).startswith("0f1e")
    assert wire.mask("short") == "****"


def test_paper_ids_resolve_to_their_catalogue_tr() -> None:
    assert canonical_tr_id("H0STCNI9") == "H0STCNI0"
    assert canonical_tr_id("H0GSCNI9") == "H0GSCNI0"
    assert canonical_tr_id("H0STCNT0") == "H0STCNT0"
    assert canonical_tr_id("NOPE0000") is None


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_malformed_kind_is_rejected_by_the_decoder(kind: str) -> None:
    frame = wire.data_frame("H0STCNT0", [trade_row(), trade_row()])
    bad = Faults(seed=1).malform(frame, kind)
    assert bad != frame
    assert isinstance(decode(bad), DecodeError)


def test_malformed_rate_picks_a_share_of_frames() -> None:
    faults = Faults(seed=1)
    faults.configure({"malformed_rate": 0.25, "malformed_kinds": ["garbage"]}, now=0.0)
    picks = [faults.pick_malformed() for _ in range(2000)]
    share = sum(p == "garbage" for p in picks) / len(picks)
    assert 0.2 < share < 0.3 and set(picks) == {None, "garbage"}


def test_extra_field_fault_shows_up_as_drift_in_the_decoder() -> None:
    faults = Faults()
    faults.configure({"extra_field": {"tr_id": "H0STCNT0", "value": "Z"}}, now=0.0)
    extra = faults.extra_fields["H0STCNT0"]
    records = decode(wire.data_frame("H0STCNT0", [[*trade_row(), extra]]))
    assert isinstance(records, list) and records[0].extra == ["Z"]
    faults.configure({"extra_field": {"tr_id": "H0STCNT0", "enabled": False}}, now=0.0)
    assert faults.extra_fields == {}


@pytest.mark.parametrize(
    "command",
    [{"malformed_rate": 2}, {"malformed_kinds": ["nope"]}, {"stall_seconds": -1},
     {"extra_field": {"value": "x"}}],
)  # fmt: skip
def test_bad_fault_commands_are_refused(command: dict[str, object]) -> None:
    with pytest.raises(FaultError):
        Faults().configure(command, now=0.0)


def test_stall_and_clear() -> None:
    faults = Faults()
    faults.configure({"stall_seconds": 5, "malformed_rate": 0.5}, now=100.0)
    assert faults.stalled(102.0) == pytest.approx(3.0)
    faults.configure({"clear": True}, now=103.0)
    assert faults.stalled(103.0) == 0 and faults.malformed_rate == 0


def test_missing_fields_fault_is_read_as_nulls_by_the_decoder() -> None:
    faults = Faults()
    faults.configure({"missing_fields": {"tr_id": "H0STCNT0", "count": 1}}, now=0.0)
    assert faults.missing_fields == {"H0STCNT0": 1}
    row = trade_row()
    row[-1] = "2"
    records = decode(wire.data_frame("H0STCNT0", [row[:-1]]))
    assert isinstance(records, list) and records[0].fields["market_cls_code"] is None
    assert records[0].fields["stck_prpr"] == 71000
    faults.configure({"missing_fields": None}, now=0.0)
    assert faults.missing_fields == {}
