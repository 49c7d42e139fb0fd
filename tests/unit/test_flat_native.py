"""kis_native's flat Avro reader and encoder against the generated Python ones (and fastavro).

The processors read every raw record through one of the two readers and write every derived
record through one of the two writers: for the same bytes they must give the same values
(nulls, negative and 64-bit numbers, unicode, long strings, string arrays in blocks), the
same projections when the writer schema has fields the reader does not ask for or lacks
ones it does (schema evolution), and both must refuse the same broken bodies. Fails when
the extension is missing, unless KIS_STREAM_PURE_PYTHON=1 (then skipped).
"""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema

from processors import flat_avro
from processors.codec import (
    AvroDecoder,
    AvroEncoder,
    WireError,
    native_encoder,
    registry_client,
    strip_logical_types,
    truncate_fields,
)
from processors.flat_avro import (
    FlatWriter,
    compile_reader,
    compile_values_reader,
    native_flat,
    native_reader,
)
from processors.inputs import BOOK_COLUMNS, BOOK_FIELDS, book_from, book_from_values
from producer.native import PURE_PYTHON_ENV, pure_python, pure_python_forced
from schemas import DERIVED, RAW

pytestmark = pytest.mark.skipif(
    pure_python_forced(), reason=f"{PURE_PYTHON_ENV}=1: pure Python on purpose"
)

RAW_SCHEMAS = sorted(RAW.glob("*.avsc"))
DERIVED_SCHEMAS = sorted(DERIVED.glob("*.avsc"))
TEXTS = ["", "a", "005930", "삼성전자", "가" * 30, "emoji 🚀 ok", "x" * 200, "tab\tand\nnew"]
LONGS = [0, -1, 1, 63, -64, 64, -65, 1_000_000, -(2**31), 2**40, 2**63 - 1, -(2**63)]
DOUBLES = [0.0, -0.0, -1.5, 1e300, -1e-300, float("inf"), 70_050.5]


def _plain(path: Path) -> dict[str, Any]:
    schema = strip_logical_types(json.loads(path.read_text(encoding="utf-8")))
    assert isinstance(schema, dict)
    return schema


def _value(rng: random.Random, avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return None if rng.random() < 0.3 else _value(rng, avro_type[1])
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return [rng.choice(TEXTS) for _ in range(rng.randint(0, 4))]
        avro_type = avro_type["type"]
    if avro_type == "string":
        return rng.choice(TEXTS)
    if avro_type in ("long", "int"):
        return rng.choice(LONGS) if avro_type == "long" else rng.randint(-(2**31), 2**31 - 1)
    if avro_type == "double":
        return rng.choice(DOUBLES)
    if avro_type == "boolean":
        return rng.random() < 0.5
    raise AssertionError(avro_type)


def _record(rng: random.Random, schema: dict[str, Any]) -> dict[str, Any]:
    return {field["name"]: _value(rng, field["type"]) for field in schema["fields"]}


def _body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _readers(schema: dict[str, Any], names: tuple[str, ...] | None = None) -> tuple[Any, Any]:
    """(native, Python) readers: `read_dict`/record reader, or the `names` projections."""
    native = native_reader(schema, names)
    assert native is not None, "kis_native's FlatReader is not in use (rebuild: make venv)"
    if names is None:
        return native.read_dict, compile_reader(schema)
    return native.read, compile_values_reader(schema, names)


def _same_values(left: Any, right: Any) -> bool:
    """Equal, with NaN equal to NaN and -0.0 told apart from 0.0 (bytes of floats)."""
    if isinstance(left, float) and isinstance(right, float):
        return struct.pack("<d", left) == struct.pack("<d", right)
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(_same_values(left[k], right[k]) for k in left)
    if isinstance(left, (tuple, list)) and isinstance(right, (tuple, list)):
        return (
            type(left) is type(right)
            and len(left) == len(right)
            and all(_same_values(a, b) for a, b in zip(left, right, strict=True))
        )
    return type(left) is type(right) and bool(left == right)


def test_the_extension_reader_is_in_use() -> None:
    assert native_flat() is not None


@pytest.mark.parametrize("path", RAW_SCHEMAS, ids=lambda p: p.stem)
def test_native_record_reader_equals_python_and_fastavro(path: Path) -> None:
    schema, rng = _plain(path), random.Random(path.stem)
    native, python = _readers(schema)
    parsed = fastavro.parse_schema(schema)
    for _ in range(40):
        body = _body(schema, _record(rng, schema))
        data = b"\x00\x00\x00\x00\x07" + body
        expected = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
        assert _same_values(native(data, 5), python(data, 5))
        assert native(data, 5) == expected


@pytest.mark.parametrize("path", RAW_SCHEMAS, ids=lambda p: p.stem)
def test_native_projection_equals_python(path: Path) -> None:
    schema, rng = _plain(path), random.Random(path.stem + "p")
    fields = [f["name"] for f in schema["fields"]]
    names = (*rng.sample(fields, 8), "not_in_the_schema")
    native, python = _readers(schema, names)
    for _ in range(40):
        record = _record(rng, schema)
        body = _body(schema, record)
        got = native(body, 0)
        assert _same_values(got, python(body, 0))
        assert got == tuple(record.get(name) for name in names)


def test_schema_evolution_extra_and_missing_fields() -> None:
    """A writer schema with fields the reader does not know, and without ones it asks for."""
    book = _plain(RAW / "h0stasp0.avsc")
    dropped = {"askp3", "bidp_rsqn10", "total_askp_rsqn"}
    added = [
        {"name": "new_text", "type": ["null", "string"], "default": None},
        {"name": "new_long", "type": "long"},
        {"name": "new_double", "type": ["null", "double"], "default": None},
        {"name": "new_list", "type": ["null", {"type": "array", "items": "string"}]},
    ]
    fields = [f for f in book["fields"] if f["name"] not in dropped]
    writer = {**book, "fields": fields[:10] + added + fields[10:]}
    rng = random.Random(6)
    for _ in range(30):
        record = _record(rng, writer) | {"symbol": "005930", "venue": "KRX", "received_at": 1}
        body = _body(writer, record)
        native, python = _readers(truncate_fields(writer, BOOK_FIELDS), BOOK_COLUMNS)
        values = native(body, 0)
        assert _same_values(values, python(body, 0))
        assert values == tuple(record.get(name) for name in BOOK_COLUMNS)
        assert values[BOOK_COLUMNS.index("askp3")] is None
        got = book_from_values(values)
        assert not isinstance(got, str) and got == book_from(record)


def test_concatenated_string_array_blocks() -> None:
    """Arrays written in several blocks, one with a negative count and its byte size."""
    schema = {
        "type": "record",
        "name": "r",
        "fields": [
            {"name": "items", "type": ["null", {"type": "array", "items": "string"}]},
            {"name": "after", "type": "long"},
        ],
    }
    one, two = "가나".encode(), b"b"
    body = (
        b"\x02"  # union branch: the array
        + b"\x02"  # block of 1 item
        + bytes([len(one) * 2])
        + one
        + b"\x03"  # block of -2 items, followed by its size in bytes
        + bytes([2 * (2 + len(two) + 1)])
        + bytes([len(two) * 2])
        + two
        + b"\x00"  # ""
        + b"\x00"  # end of the array
        + b"\x05"  # after = -3
    )
    native, python = _readers(schema)
    assert native(body, 0) == python(body, 0) == {"items": ["가나", "b", ""], "after": -3}


def _both_refuse(reader_native: Any, reader_python: Any, data: bytes) -> None:
    with pytest.raises(ValueError):
        reader_native(data, 0)
    with pytest.raises((ValueError, IndexError, struct.error)):
        reader_python(data, 0)


def test_both_refuse_broken_bodies() -> None:
    schema = _plain(RAW / "h0stcnt0.avsc")
    native, python = _readers(schema)
    body = _body(schema, _record(random.Random(3), schema))
    for cut in range(0, len(body), 7):
        _both_refuse(native, python, body[:cut])
    long_schema = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}
    n_native, n_python = _readers(long_schema)
    max_long = b"\xfe" + b"\xff" * 8 + b"\x01"  # 2**63 - 1 zig-zagged: 10 bytes
    assert n_native(max_long, 0) == n_python(max_long, 0) == {"n": 2**63 - 1}
    _both_refuse(n_native, n_python, b"\xff" * 9 + b"\x02")  # 65 bits
    _both_refuse(n_native, n_python, b"\xff" * 12)
    text_schema = {
        "type": "record",
        "name": "r",
        "fields": [{"name": "t", "type": ["null", "string"]}],
    }
    t_native, t_python = _readers(text_schema)
    _both_refuse(t_native, t_python, b"\x04\x02a")  # union index 2
    _both_refuse(t_native, t_python, b"\x02\x04\xff\xfe")  # not UTF-8
    _both_refuse(t_native, t_python, b"\x02\x03")  # negative length
    _both_refuse(t_native, t_python, b"\x02\x80\x02" + b"x" * 10)  # longer than the value


def _registry_with(schema: dict[str, Any], subject: str) -> tuple[Any, bytes]:
    client = registry_client(f"mock://flat-native-{subject}")
    schema_id = client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
    return client, b"\x00" + schema_id.to_bytes(4, "big")


def test_decoders_of_both_paths_agree() -> None:
    schema = _plain(RAW / "h0stasp0.avsc")
    client, header = _registry_with(schema, "book-value")
    native = AvroDecoder(client, BOOK_FIELDS, columns=BOOK_COLUMNS)
    with pure_python():
        python = AvroDecoder(client, BOOK_FIELDS, columns=BOOK_COLUMNS)
        python.schema(int.from_bytes(header[1:], "big"))  # compiled while pure Python
    rng = random.Random(8)
    for _ in range(30):
        data = header + _body(schema, _record(rng, schema))
        assert _same_values(native.values(data), python.values(data))
        assert _same_values(native.decode(data), python.decode(data))
    for bad in (header + b"\x10", header[:3], b"\x01" + header[1:] + b"\x00"):
        for decoder in (native, python):
            with pytest.raises(WireError):
                decoder.values(bad)


@pytest.mark.parametrize("path", DERIVED_SCHEMAS, ids=lambda p: p.stem)
def test_native_encoder_writes_the_python_bytes(path: Path) -> None:
    schema, rng = _plain(path), random.Random(path.stem)
    writer = FlatWriter.compile(schema)
    assert writer is not None
    encoder = native_encoder(writer, b"\x00\x00\x00\x00\x09")
    assert encoder is not None
    for _ in range(50):
        record = _record(rng, schema)
        out = bytearray(b"\x00\x00\x00\x00\x09")
        writer.write(out, record)
        assert encoder.encode(record) == bytes(out)


def _both_encoders(file: str, subject: str) -> tuple[Any, AvroEncoder, AvroEncoder]:
    """(schema, native encoder, pure-Python encoder) of a derived schema."""
    schema = json.loads((DERIVED / file).read_text(encoding="utf-8"))
    client = registry_client(f"mock://flat-native-{subject}")
    native = AvroEncoder(client, subject, schema)
    with pure_python():
        python = AvroEncoder(client, subject, schema)
        python.register()
    native.register()
    assert native._native is not None and python._native is None
    return schema, native, python


def test_encoders_of_both_paths_agree_and_refuse_alike() -> None:
    schema, native, python = _both_encoders("book_imbalance.avsc", "imbalance-value")
    rng = random.Random(9)
    for _ in range(30):
        record = _record(rng, strip_logical_types(schema))
        assert native.encode(record) == python.encode(record)
    record = _record(rng, strip_logical_types(schema))
    for broken in (record | {"symbol": None}, record | {"spread": "1"}, {"symbol": "x"}):
        for encoder in (native, python):
            with pytest.raises(ValueError):
                encoder.encode(broken)


def test_booleans_are_written_and_refused_as_the_python_writer_does() -> None:
    schema, native, python = _both_encoders("spread_krx_nxt.avsc", "spread-value")
    record = _record(random.Random(11), strip_logical_types(schema))
    for flag in (True, False):
        flagged = record | {"crossed": flag}
        assert native.encode(flagged) == python.encode(flagged)
    for broken in (1, 0, None, "true", 1.0):
        errors = []
        for encoder in (native, python):
            with pytest.raises(ValueError) as caught:
                encoder.encode(record | {"crossed": broken})
            errors.append(str(caught.value))
        assert errors[0] == errors[1]
        assert errors[0].endswith(f"not a boolean: {broken!r}")


def test_a_build_without_booleans_leaves_such_schemas_to_python() -> None:
    class OldEncoder:
        def __init__(self, header: bytes, fields: list[Any], from_record: bool) -> None:
            if any(kind == "boolean" for _, kind, _, _ in fields):
                raise ValueError("unsupported field kind 'boolean'")

    old = SimpleNamespace(Encoder=OldEncoder, FLAT_READER_API=flat_avro.FLAT_READER_API)
    writer = FlatWriter.compile(_plain(DERIVED / "spread_krx_nxt.avsc"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("producer.native.native_module", lambda: old)
        assert native_encoder(writer, b"\x00\x00\x00\x00\x09") is None
        imbalance = FlatWriter.compile(_plain(DERIVED / "book_imbalance.avsc"))
        assert isinstance(native_encoder(imbalance, b"\x00\x00\x00\x00\x09"), OldEncoder)


def test_a_build_without_the_reader_falls_back_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older kis_native (no FlatReader API) is not used: the generated Python reads."""
    stale = SimpleNamespace(__version__="0.2.0")
    monkeypatch.setattr("producer.native.native_module", lambda: stale)
    assert flat_avro.native_flat() is None
    schema = _plain(RAW / "h0stasp0.avsc")
    assert native_reader(schema) is None
    client, header = _registry_with(schema, "stale-value")
    decoder = AvroDecoder(client, BOOK_FIELDS, columns=BOOK_COLUMNS)
    record = _record(random.Random(10), schema)
    data = header + _body(schema, record)
    decoder.values(data)
    assert decoder._values_readers  # compiled: the Python one
    assert decoder.values(data) == tuple(record.get(name) for name in BOOK_COLUMNS)
