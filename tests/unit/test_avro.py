"""Avro schemas generated from the catalogue, and the compiled Confluent encoder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from producer.avro import (
    ENVELOPE,
    ConfluentEncoder,
    FastavroEncoder,
    RawEncoder,
    compile_encoder,
    dead_letter_schema,
    dead_letter_to_avro,
    decode_confluent,
    load_dead_letter_schema,
    load_raw_schema,
    raw_schema,
    schema_files,
    stale_schema_files,
    to_avro,
    write_schema_files,
)
from producer.catalogue import TrSpec, load_catalogue
from producer.decode_cli import schemas_command
from producer.frames import FrameDecoder
from producer.records import DecodeError, Record

CATALOGUE = load_catalogue()


def test_checked_in_schemas_are_current() -> None:
    assert stale_schema_files() == [], "run `kis-stream schemas` and commit schemas/"
    result = CliRunner().invoke(schemas_command, ["--check"])
    assert result.exit_code == 0, result.output


def test_stale_and_extra_files_are_detected(tmp_path: Path) -> None:
    assert len(write_schema_files(tmp_path)) == len(CATALOGUE) + 1
    assert stale_schema_files(tmp_path) == []
    assert write_schema_files(tmp_path) == []
    (tmp_path / "raw" / "h0stcnt0.avsc").write_text("{}", encoding="utf-8")
    (tmp_path / "raw" / "h0gone00.avsc").write_text("{}", encoding="utf-8")
    assert stale_schema_files(tmp_path) == ["raw/h0stcnt0.avsc", "raw/h0gone00.avsc"]
    assert sorted(write_schema_files(tmp_path)) == ["raw/h0gone00.avsc", "raw/h0stcnt0.avsc"]
    assert not (tmp_path / "raw" / "h0gone00.avsc").exists()


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
def test_raw_schema_shape(spec: TrSpec) -> None:
    schema = load_raw_schema(spec.tr_id)
    assert schema == raw_schema(spec)
    fastavro.parse_schema(schema)
    assert (schema["namespace"], schema["name"]) == ("kis.raw", spec.tr_id)
    assert spec.name in schema["doc"]
    names = [f["name"] for f in schema["fields"]]
    assert names[: len(ENVELOPE)] == [
        "tr_id",
        "venue",
        "symbol",
        "event_time",
        "received_at",
        "session",
        "seq",
        "index",
        "extra_fields",
    ]
    assert names[len(ENVELOPE) :] == [f.column for f in spec.fields]
    for field, fspec in zip(schema["fields"][len(ENVELOPE) :], spec.fields, strict=True):
        assert field["type"][0] == "null" and field["default"] is None
        assert fspec.ko in field["doc"] and fspec.name in field["doc"]
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["event_time"]["type"][1]["logicalType"] == "timestamp-millis"
    assert by_name["received_at"]["type"]["logicalType"] == "timestamp-micros"
    for fspec in spec.fields:
        if fspec.type == "time":
            assert by_name[fspec.column]["type"][1] == {"type": "int", "logicalType": "time-millis"}
        if fspec.type == "date":
            assert by_name[fspec.column]["type"][1] == {"type": "int", "logicalType": "date"}


def test_schema_files_cover_every_tr_and_dead_letter() -> None:
    files = schema_files()
    assert set(files) == {f"raw/{s.tr_id.lower()}.avsc" for s in CATALOGUE} | {"dead_letter.avsc"}
    assert (schemas.RAW / "h0stcnt0.avsc").read_text(encoding="utf-8") == files["raw/h0stcnt0.avsc"]
    assert "주식현재가 (STCK_PRPR)" in files["raw/h0stcnt0.avsc"]  # Korean kept, not escaped
    assert load_dead_letter_schema() == dead_letter_schema()


# --- encoding ------------------------------------------------------------------------------

_ENVELOPE_VALUES = st.fixed_dictionaries(
    {
        "event_time": st.none() | st.integers(0, 2**45),
        "received_at": st.integers(0, 2**55),
        "session": st.text(max_size=8),
        "seq": st.integers(0, 2**40),
        "index": st.integers(0, 999),
        "extra": st.none() | st.lists(st.text(max_size=5), max_size=3),
    }
)
_TYPED = {
    "string": st.text(max_size=10),
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False, width=64),
    "time": st.integers(0, 86_399_999),
    "date": st.integers(-50_000, 50_000),
}


def _record(spec: TrSpec, env: dict[str, Any], fields: dict[str, Any]) -> Record:
    return Record(spec.tr_id, spec.venue, "005930", fields=fields, **env)


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_compiled_encoder_matches_fastavro(spec: TrSpec, data: st.DataObject) -> None:
    env = data.draw(_ENVELOPE_VALUES)
    fields = {f.column: data.draw(st.none() | _TYPED[f.type]) for f in spec.fields}
    record = _record(spec, env, fields)
    schema = raw_schema(spec)
    ours = RawEncoder({spec.tr_id: 77}).encode(record)
    reference = FastavroEncoder(schema, 77).encode(to_avro(record))
    assert ours == reference
    schema_id, datum = decode_confluent(ours, schema)
    assert schema_id == 77
    assert datum == to_avro(record)


def test_wire_header_and_dict_encoder() -> None:
    spec = CATALOGUE["H0STPGM0"]
    record = _record(
        spec,
        {"event_time": None, "received_at": 1, "session": "s", "seq": 2, "index": 0},
        {f.column: None for f in spec.fields},
    )
    data = ConfluentEncoder(raw_schema(spec), 258).encode(to_avro(record))
    assert data[:5] == b"\x00" + struct.pack(">I", 258)
    assert data == RawEncoder({"H0STPGM0": 258}).encode(record)


def test_decoded_real_frame_round_trips_through_avro() -> None:
    frame = (
        "0|HDFSCNT0|001|DNASAAPL^AAPL^4^20230502^20230502^091913^20230502^221913^169.9200^"
        "170.1000^169.4200^169.8000^2^0.2100^+0.12^169.7700^169.7900^201^2^3^108470^18415181^"
        "24757^20519^82.88^1"
    )
    records = FrameDecoder(business_date=lambda: dt.date(2023, 5, 2)).decode(frame, received_at=7)
    assert isinstance(records, list)
    data = RawEncoder({"HDFSCNT0": 5}).encode(records[0])
    # Read back with logical types applied, as a consumer would.
    datum = fastavro.schemaless_reader(
        io.BytesIO(data[5:]), fastavro.parse_schema(load_raw_schema("HDFSCNT0")), None
    )
    assert datum["last"] == 169.8 and datum["rate"] == 0.12
    assert datum["khms"] == dt.time(22, 19, 13)
    assert datum["kymd"] == dt.date(2023, 5, 2)
    assert datum["event_time"] == dt.datetime(2023, 5, 2, 13, 19, 13, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("column", "value"),
    [("stck_prpr", "62700"), ("stck_prpr", 2**63), ("prdy_ctrt", "0.64"), ("mksc_shrn_iscd", 5)],
)
def test_encoder_rejects_values_that_do_not_fit(column: str, value: Any) -> None:
    spec = CATALOGUE["H0STCNT0"]
    fields: dict[str, Any] = {f.column: None for f in spec.fields}
    fields[column] = value
    record = _record(
        spec, {"event_time": None, "received_at": 1, "session": "", "seq": 0, "index": 0}, fields
    )
    with pytest.raises((TypeError, ValueError, struct.error)):
        RawEncoder({"H0STCNT0": 1}).encode(record)


def test_dead_letter_round_trip() -> None:
    error = DecodeError("unknown_tr: 'X'", b"0|X|001|\xff", "X", 17, "s1", 4)
    schema = dead_letter_schema()
    encoder = ConfluentEncoder(schema, 9)
    data = encoder.encode(dead_letter_to_avro(error))
    assert data == FastavroEncoder(schema, 9).encode(dead_letter_to_avro(error))
    assert decode_confluent(data, schema) == (
        9,
        {
            "raw": b"0|X|001|\xff",
            "reason": "unknown_tr: 'X'",
            "tr_id": "X",
            "received_at": 17,
            "session": "s1",
            "seq": 4,
        },
    )
    text_error = dataclasses.replace(error, raw="0|X|가", tr_id=None)
    assert dead_letter_to_avro(text_error)["raw"] == "0|X|가".encode()


def test_unsupported_schema_shapes_are_refused() -> None:
    for ftype in (["string", "null"], ["null", "boolean"], "boolean", ["null", "int", "long"]):
        with pytest.raises(ValueError):
            compile_encoder(
                {"type": "record", "name": "X", "fields": [{"name": "a", "type": ftype}]}
            )


def test_older_schema_data_reads_with_current_schema() -> None:
    """BACKWARD compatibility, locally: a reader on the current schema reads data written
    with the schema minus the fields KIS appended later (they default to null)."""
    spec = CATALOGUE["H0STASP0"]
    current = raw_schema(spec)
    older = json.loads(json.dumps(current))
    since = {f.column for f in spec.fields if f.since}
    older["fields"] = [f for f in older["fields"] if f["name"] not in since]
    fields = {f.column: 1 for f in spec.fields if f.type == "long" and f.column not in since}
    datum = {
        "tr_id": "H0STASP0",
        "venue": "KRX",
        "symbol": "005930",
        "event_time": None,
        "received_at": 1,
        "session": "",
        "seq": 0,
        "index": 0,
        "extra_fields": None,
        **fields,
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(older), datum)
    buffer.seek(0)
    read = fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(older), fastavro.parse_schema(current)
    )
    assert isinstance(read, dict)
    assert all(read[c] is None for c in since) and read["askp1"] == 1
