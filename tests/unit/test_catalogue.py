"""The TR catalogue: complete against trs.json, and typed the way real frames need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer.catalogue import load_catalogue, parse_catalogue, snake_case

TRS_JSON = Path(__file__).resolve().parents[3] / "shared" / "kis" / "trs.json"


def test_every_tr_has_expected_width_and_kind() -> None:
    cat = load_catalogue()
    widths = {spec.tr_id: spec.width for spec in cat}
    assert widths == {
        "H0STCNT0": 47,
        "H0NXCNT0": 46,
        "H0UNCNT0": 46,
        "H0STASP0": 63,
        "H0NXASP0": 65,
        "H0UNASP0": 65,
        "H0STANC0": 45,
        "H0NXANC0": 46,
        "H0UNANC0": 46,
        "H0STPGM0": 11,
        "H0NXPGM0": 11,
        "H0UNPGM0": 11,
        "H0STMKO0": 11,
        "H0NXMKO0": 11,
        "H0STCNI0": 26,
        "H0GSCNI0": 25,
        "HDFSCNT0": 26,
        "HDFSASP0": 71,
    }
    assert {spec.kind for spec in cat} == {
        "trade",
        "book",
        "expected",
        "program",
        "market_status",
        "notice",
    }


@pytest.mark.skipif(not TRS_JSON.exists(), reason="shared/kis/trs.json not available")
def test_field_order_matches_trs_json() -> None:
    source = json.loads(TRS_JSON.read_text(encoding="utf-8"))["trs"]
    cat = load_catalogue()
    assert [t["tr_id"] for t in source] == [s.tr_id for s in cat]
    for tr in source:
        spec = cat[tr["tr_id"]]
        assert [f["name"] for f in tr["fields"]] == [f.name for f in spec.fields]
        assert [f.get("since") for f in tr["fields"]] == [f.since for f in spec.fields]
        assert (spec.venue, spec.kind, spec.encrypted) == (tr["venue"], tr["kind"], tr["encrypted"])


@pytest.mark.parametrize(
    ("tr_id", "name", "ftype"),
    [
        ("H0STCNT0", "MKSC_SHRN_ISCD", "string"),
        ("H0STCNT0", "STCK_CNTG_HOUR", "time"),
        ("H0STCNT0", "STCK_PRPR", "long"),
        ("H0STCNT0", "PRDY_VRSS", "long"),
        ("H0STCNT0", "PRDY_VRSS_SIGN", "string"),
        ("H0STCNT0", "PRDY_CTRT", "double"),
        ("H0STCNT0", "WGHN_AVRG_STCK_PRC", "double"),
        ("H0STCNT0", "ACML_TR_PBMN", "long"),
        ("H0STCNT0", "CTTR", "double"),
        ("H0STCNT0", "VOL_TNRT", "double"),
        ("H0STCNT0", "PRDY_SMNS_HOUR_ACML_VOL_RATE", "double"),
        ("H0STCNT0", "BSOP_DATE", "date"),
        ("H0STCNT0", "NEW_MKOP_CLS_CODE", "string"),
        ("H0STASP0", "BSOP_HOUR", "time"),
        ("H0STASP0", "ASKP_RSQN10", "long"),
        ("H0STASP0", "ANTC_CNTG_PRDY_CTRT", "double"),
        ("H0STASP0", "TOTAL_ASKP_RSQN_ICDC", "long"),
        ("H0STPGM0", "NTBY_TR_PBMN", "long"),
        ("H0STMKO0", "VI_CLS_CODE", "string"),
        ("H0STCNI0", "ACNT_NO", "string"),
        ("H0STCNI0", "ODER_NO", "string"),
        ("H0STCNI0", "CNTG_UNPR", "long"),
        ("H0STCNI0", "CRDT_LOAN_DATE", "date"),
        ("H0GSCNI0", "CNTG_UNPR", "double"),
        ("HDFSCNT0", "RSYM", "string"),
        ("HDFSCNT0", "LAST", "double"),
        ("HDFSCNT0", "RATE", "double"),
        ("HDFSCNT0", "TAMT", "double"),
        ("HDFSCNT0", "TVOL", "long"),
        ("HDFSCNT0", "KHMS", "time"),
        ("HDFSASP0", "PBID1", "double"),
        ("HDFSASP0", "VASK10", "long"),
    ],
)
def test_verified_types(tr_id: str, name: str, ftype: str) -> None:
    assert load_catalogue()[tr_id].field_named(name).type == ftype


def test_paper_ids_resolve_to_their_tr() -> None:
    cat = load_catalogue()
    assert cat.get("H0STCNI9") is cat.get("H0STCNI0")
    assert cat.get("H0GSCNI9") is cat.get("H0GSCNI0")
    assert cat.get("H0NXCNT9") is None
    assert {"H0STCNI9", "H0GSCNI9", "HDFSASP0"} <= cat.all_tr_ids


def test_symbol_and_event_time_fields() -> None:
    cat = load_catalogue()
    for spec in cat:
        if spec.kind == "notice":
            assert spec.symbol_field == "STCK_SHRN_ISCD"
        else:
            assert spec.symbol_index == 0
    assert (cat["H0STCNT0"].date_field, cat["H0STCNT0"].time_field) == (
        "BSOP_DATE",
        "STCK_CNTG_HOUR",
    )
    assert (cat["H0STASP0"].date_field, cat["H0STASP0"].time_field) == (None, "BSOP_HOUR")
    assert (cat["HDFSCNT0"].date_field, cat["HDFSCNT0"].time_field) == ("KYMD", "KHMS")
    assert cat["H0STMKO0"].time_field is None


def test_known_widths_follow_since_fields() -> None:
    cat = load_catalogue()
    assert cat["H0STCNT0"].known_widths == {46, 47}
    assert {59, 62, 63} <= cat["H0STASP0"].known_widths
    assert cat["H0NXASP0"].known_widths == {65}


def test_columns_are_unique_snake_case_with_korean_doc() -> None:
    for spec in load_catalogue():
        columns = [f.column for f in spec.fields]
        assert len(set(columns)) == len(columns)
        assert all(c == c.lower() for c in columns)
        assert all(f.ko for f in spec.fields), spec.tr_id
    assert spec.topic == "kis." + spec.tr_id.lower()


def test_snake_case_rejects_unsafe_names() -> None:
    assert snake_case("ASKP_RSQN10") == "askp_rsqn10"
    with pytest.raises(ValueError):
        snake_case("BAD-NAME")


def test_parse_rejects_unknown_type_and_dangling_reference() -> None:
    tr = {
        "tr_id": "X",
        "name": "x",
        "venue": "KRX",
        "kind": "trade",
        "encrypted": False,
        "paper_tr_id": None,
        "symbol_field": "A",
        "fields": [{"name": "A", "ko": "a", "type": "decimal"}],
    }
    with pytest.raises(ValueError, match="unknown type"):
        parse_catalogue(json.dumps({"trs": [tr]}))
    tr["fields"] = [{"name": "A", "ko": "a", "type": "string"}]
    tr["time_field"] = "MISSING"
    with pytest.raises(ValueError, match="unknown field"):
        parse_catalogue(json.dumps({"trs": [tr]}))
