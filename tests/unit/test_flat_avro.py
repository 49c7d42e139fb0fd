"""The specialised flat-record Avro reader and writer agree with fastavro byte for byte."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import fastavro
import pytest

from processors.codec import (
    AvroDecoder,
    WireError,
    registry_client,
    strip_logical_types,
    truncate_fields,
)
from processors.flat_avro import AvroBodyError, FlatWriter, compile_reader
from processors.inputs import BOOK_FIELDS
from schemas import DERIVED, RAW

RAW_SCHEMAS = sorted(RAW.glob("*.avsc"))
DERIVED_SCHEMAS = sorted(DERIVED.glob("*.avsc"))


def _plain(path: Path) -> dict[str, Any]:
    schema = strip_logical_types(json.loads(path.read_text(encoding="utf-8")))
    assert isinstance(schema, dict)
    return schema


def _value(rng: random.Random, avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return None if rng.random() < 0.3 else _value(rng, avro_type[1])
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return [_value(rng, avro_type["items"]) for _ in range(rng.randint(0, 3))]
        avro_type = avro_type["type"]
    if avro_type == "string":
        return "".join(rng.choice("aZ09 |*가나-") for _ in range(rng.randint(0, 12)))
    if avro_type == "long":
        return rng.choice([0, -1, 1, 63, -64, 64, -65, 2**31, -(2**40), 2**63 - 1, -(2**63)])
    if avro_type == "int":
        return rng.randint(-(2**31), 2**31 - 1)
    if avro_type == "double":
        return rng.choice([0.0, -1.5, 1e300, rng.uniform(-1e6, 1e6)])
    if avro_type == "boolean":
        return rng.random() < 0.5
    raise AssertionError(avro_type)


def _record(rng: random.Random, schema: dict[str, Any]) -> dict[str, Any]:
    return {field["name"]: _value(rng, field["type"]) for field in schema["fields"]}


def _fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@pytest.mark.parametrize("path", RAW_SCHEMAS, ids=lambda p: p.stem)
def test_reader_matches_fastavro_on_every_raw_schema(path: Path) -> None:
    schema, rng = _plain(path), random.Random(path.stem)
    reader = compile_reader(schema)
    assert reader is not None
    parsed = fastavro.parse_schema(schema)
    for _ in range(30):
        data = b"\x00\x00\x00\x00\x07" + _fastavro_bytes(schema, _record(rng, schema))
        expected = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, None)
        assert reader(data, 5) == expected


def test_reader_of_a_truncated_schema_reads_a_prefix() -> None:
    schema = _plain(RAW / "h0stasp0.avsc")
    short = truncate_fields(schema, BOOK_FIELDS)
    reader = compile_reader(short)
    assert reader is not None
    record = _record(random.Random(1), schema)
    got = reader(_fastavro_bytes(schema, record), 0)
    assert list(got) == [f["name"] for f in short["fields"]]
    assert got == {name: record[name] for name in got}


@pytest.mark.parametrize("path", DERIVED_SCHEMAS, ids=lambda p: p.stem)
def test_writer_matches_fastavro_on_every_derived_schema(path: Path) -> None:
    schema, rng = _plain(path), random.Random(path.stem)
    writer = FlatWriter.compile(schema)
    assert writer is not None
    for _ in range(50):
        record = _record(rng, schema)
        out = bytearray()
        writer.write(out, record)
        assert bytes(out) == _fastavro_bytes(schema, record)


def test_writer_refuses_records_that_do_not_fit() -> None:
    writer = FlatWriter.compile(_plain(DERIVED / "bars_1s.avsc"))
    assert writer is not None
    record = _record(random.Random(2), _plain(DERIVED / "bars_1s.avsc"))
    with pytest.raises(TypeError):
        writer.write(bytearray(), record | {"open": None})  # not nullable
    with pytest.raises(KeyError):
        writer.write(bytearray(), {k: v for k, v in record.items() if k != "close"})


def test_other_shapes_are_left_to_fastavro() -> None:
    nested = {
        "type": "record",
        "name": "n",
        "fields": [{"name": "m", "type": {"type": "map", "values": "long"}}],
    }
    late_null = {"type": "record", "name": "x", "fields": [{"name": "a", "type": ["long", "null"]}]}
    for schema in (nested, late_null, {"type": "string"}):
        assert compile_reader(schema) is None
        assert FlatWriter.compile(schema) is None


def test_bad_bytes_raise_instead_of_misreading() -> None:
    schema = _plain(RAW / "h0stcnt0.avsc")
    reader = compile_reader(schema)
    assert reader is not None
    data = _fastavro_bytes(schema, _record(random.Random(3), schema))
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises((AvroBodyError, IndexError, UnicodeDecodeError)):
            reader(data[:cut], 0)
    # tr_id "H0STCNT0": length 8 -> zig-zag 16; claim 60 bytes instead
    with pytest.raises(AvroBodyError):
        reader(b"\x78" + data[1:20], 0)


def test_decoder_turns_bad_bytes_into_wire_errors() -> None:
    from confluent_kafka.schema_registry import Schema

    client = registry_client("mock://flat-avro")
    text = (RAW / "h0stcnt0.avsc").read_text(encoding="utf-8")
    schema_id = client.register_schema("t-value", Schema(text, "AVRO"))
    decoder = AvroDecoder(client)
    body = _fastavro_bytes(
        _plain(RAW / "h0stcnt0.avsc"), _record(random.Random(4), _plain(RAW / "h0stcnt0.avsc"))
    )
    header = b"\x00" + schema_id.to_bytes(4, "big")
    plain = _plain(RAW / "h0stcnt0.avsc")
    expected = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(plain), None)
    assert decoder.decode(header + body) == expected  # first: fastavro, compiles the reader
    assert decoder.decode(header + body) == expected  # then the compiled reader
    with pytest.raises(WireError):
        decoder.decode(header + body[: len(body) // 3])


def test_the_spread_reads_books_only_up_to_level_one() -> None:
    from processors.inputs import QUOTE_COLUMNS, book_from

    schema = _plain(RAW / "h0stasp0.avsc")
    record = _record(random.Random(5), schema) | {"symbol": "005930", "venue": "KRX"}
    record |= {"askp1": 70_100, "bidp1": 70_000, "askp_rsqn1": 5, "bidp_rsqn1": 7, "received_at": 1}
    reader = compile_reader(truncate_fields(schema, frozenset(QUOTE_COLUMNS)))
    assert reader is not None
    got = reader(_fastavro_bytes(schema, record), 0)
    assert "bidp_rsqn1" in got and "bidp_rsqn2" not in got and "total_askp_rsqn" not in got
    book = book_from(got)
    assert not isinstance(book, str)
    assert (book.bid[0], book.ask[0], book.bid_qty[0], book.ask_qty[0]) == (70_000, 70_100, 7, 5)
    assert book.has_bid and book.has_ask
