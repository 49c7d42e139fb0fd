"""The compiled Avro encoder (kis_native) against the pure-Python encoder and fastavro.

For random records of every TR the native wire bytes must equal the Python encoder's
(which tests/unit/test_avro.py checks against fastavro) and read back with fastavro;
values of the wrong type must raise the same exception class. Fails when the extension
is missing, unless KIS_STREAM_PURE_PYTHON=1 (then skipped).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.avro import (
    MAGIC,
    ConfluentEncoder,
    FastavroEncoder,
    RawEncoder,
    compile_encoder,
    compile_python_encoder,
    dead_letter_schema,
    dead_letter_to_avro,
    decode_confluent,
    raw_schema,
    to_avro,
)
from producer.catalogue import TrSpec, load_catalogue
from producer.native import PURE_PYTHON_ENV, native_module, pure_python, pure_python_forced
from producer.records import DecodeError, Record

pytestmark = pytest.mark.skipif(
    pure_python_forced(), reason=f"{PURE_PYTHON_ENV}=1: pure Python on purpose"
)

CATALOGUE = load_catalogue()
_TYPED = {
    "string": st.text(max_size=10),
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(width=64) | st.integers(-(2**60), 2**60),
    "time": st.integers(0, 86_399_999),
    "date": st.integers(-50_000, 50_000),
}
_ENVELOPE = st.fixed_dictionaries(
    {
        "event_time": st.none() | st.integers(-(2**62), 2**62),
        "received_at": st.integers(0, 2**62),
        "session": st.text(max_size=8),
        "seq": st.integers(0, 2**62),
        "index": st.integers(0, 999),
        "extra": st.none() | st.lists(st.text(max_size=5), max_size=3),
    }
)


def _python_wire(spec: TrSpec, schema_id: int) -> Callable[[Record], bytes]:
    body = compile_python_encoder(raw_schema(spec), from_record=True)
    header = MAGIC + struct.pack(">I", schema_id)
    return lambda record: header + body(record)


def test_native_encoder_is_in_use() -> None:
    assert native_module() is not None, "kis_native is not usable: build it with `make venv`"
    encode = compile_encoder(raw_schema(CATALOGUE["H0STCNT0"]))
    assert type(encode).__module__ != __name__ and "kis_native" in repr(encode)
    with pure_python():
        assert "kis_native" not in repr(compile_encoder(raw_schema(CATALOGUE["H0STCNT0"])))


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_native_bytes_equal_python_and_read_back(spec: TrSpec, data: st.DataObject) -> None:
    env = data.draw(_ENVELOPE)
    fields = {f.column: data.draw(st.none() | _TYPED[f.type]) for f in spec.fields}
    record = Record(spec.tr_id, spec.venue, data.draw(st.text(max_size=8)), fields=fields, **env)
    ours = RawEncoder({spec.tr_id: 77}).encode(record)
    assert ours == _python_wire(spec, 77)(record)
    assert ours == FastavroEncoder(raw_schema(spec), 77).encode(to_avro(record))
    assert ours == ConfluentEncoder(raw_schema(spec), 77).encode(to_avro(record))
    schema_id, datum = decode_confluent(ours, raw_schema(spec))
    assert schema_id == 77
    expected = to_avro(record)
    for column, ftype in ((f.column, f.type) for f in spec.fields):
        if ftype == "double" and expected[column] is not None:
            expected[column] = float(expected[column])
    assert repr(datum) == repr(expected)  # repr: -0.0 and nan compare as written


def test_negative_zero_and_extremes() -> None:
    spec = CATALOGUE["HDFSCNT0"]
    fields: dict[str, Any] = {f.column: None for f in spec.fields}
    doubles = [f.column for f in spec.fields if f.type == "double"]
    longs = [f.column for f in spec.fields if f.type == "long"]
    fields[doubles[0]], fields[doubles[1]] = -0.0, float("inf")
    fields[longs[0]], fields[longs[1]] = -(2**63), 2**63 - 1
    record = Record(spec.tr_id, spec.venue, "DNASAAPL", None, 0, "", 0, 0, fields, [])
    assert RawEncoder({spec.tr_id: 1}).encode(record) == _python_wire(spec, 1)(record)


_BAD_VALUES: list[tuple[str, Any]] = [
    ("stck_prpr", "62700"),  # str for a long
    ("stck_prpr", 2**63),  # out of the long range
    ("stck_prpr", 1.5),
    ("prdy_ctrt", "0.64"),  # str for a double
    ("prdy_ctrt", 10**400),  # int too large for a double
    ("mksc_shrn_iscd", 5),  # int for a string
    ("mksc_shrn_iscd", b"005930"),
    ("mksc_shrn_iscd", "\ud800"),  # not encodable as UTF-8
]


def _error_class(encode: Callable[[Record], bytes], record: Record) -> type[BaseException]:
    with pytest.raises(Exception) as info:
        encode(record)
    return info.type


@pytest.mark.parametrize(("column", "value"), _BAD_VALUES)
def test_wrong_values_raise_the_same_error_class(column: str, value: Any) -> None:
    spec = CATALOGUE["H0STCNT0"]
    fields: dict[str, Any] = {f.column: None for f in spec.fields}
    fields[column] = value
    record = Record(spec.tr_id, spec.venue, "005930", None, 1, "", 0, 0, fields)
    native = _error_class(RawEncoder({spec.tr_id: 1}).encode, record)
    assert native is _error_class(_python_wire(spec, 1), record)
    assert issubclass(native, TypeError | ValueError | struct.error)


def test_missing_field_and_bad_extra_raise_like_python() -> None:
    spec = CATALOGUE["H0STPGM0"]
    fields: dict[str, Any] = {f.column: None for f in spec.fields}
    del fields["ntby_cnqn"]
    record = Record(spec.tr_id, spec.venue, "005930", None, 1, "", 0, 0, fields)
    assert _error_class(RawEncoder({spec.tr_id: 1}).encode, record) is KeyError
    assert _error_class(_python_wire(spec, 1), record) is KeyError
    for extra in ("abc", [1]):
        fields = {f.column: None for f in spec.fields}
        record = Record(spec.tr_id, spec.venue, "005930", None, 1, "", 0, 0, fields, extra)  # type: ignore[arg-type]
        native = _error_class(RawEncoder({spec.tr_id: 1}).encode, record)
        assert native is _error_class(_python_wire(spec, 1), record)


def test_dead_letter_bytes_equal_fastavro() -> None:
    schema = dead_letter_schema()
    for raw, tr_id in ((b"0|X|001|\xff", "X"), ("0|X|가", None), (b"", None)):
        error = DecodeError("unknown_tr: 'X'", raw, tr_id, 17, "s1", 4)
        datum = dead_letter_to_avro(error)
        ours = ConfluentEncoder(schema, 9).encode(datum)
        assert ours == FastavroEncoder(schema, 9).encode(datum)
        with pure_python():
            assert ours == ConfluentEncoder(schema, 9).encode(datum)


def _python_record(record: Record, **changes: Any) -> Record:
    """A `Record` dataclass with the attributes of ``record`` (native or not), changed."""
    attrs = {f.name: getattr(record, f.name) for f in dataclasses.fields(Record)}
    return Record(**(attrs | changes))


def test_decoded_records_encode_identically_whatever_the_key_order() -> None:
    """The native encoder walks a decoder's dict in schema order and looks keys up once the
    order differs (drift widths, other dict builders): the bytes never depend on it."""
    from producer.bench_decode import build_frames
    from producer.frames import FrameDecoder

    decoder = FrameDecoder(business_date=lambda: dt.date(2026, 9, 14))
    decoder.set_key("H0STCNI0", "abcdefghijklmnopabcdefghijklmnop", "0123456789abcdef")
    native = RawEncoder({spec.tr_id: 3 for spec in CATALOGUE})
    python = {spec.tr_id: _python_wire(spec, 3) for spec in CATALOGUE}
    frames = build_frames(400)
    short = CATALOGUE["H0STASP0"]  # an older, shorter layout: missing columns come last
    row = ["005930", "090000", *["1"] * 57]
    frames.append("0|H0STASP0|001|" + "^".join(row))
    encoded = 0
    for frame in frames:
        records = decoder.decode(frame, received_at=1)
        assert isinstance(records, list), records
        for record in records:
            assert native.encode(record) == python[record.tr_id](record)
            shuffled = dict(reversed(list(record.fields.items())))
            shuffled["not_in_schema"] = 1
            other = _python_record(record, fields=shuffled)
            assert native.encode(other) == python[record.tr_id](other)
            encoded += 1
    assert encoded > 400 and short.width != 59


def test_untouched_native_records_against_other_schemas_encode_like_python() -> None:
    """A decoded record whose `fields` nobody built is written from its Rust values only
    when the schema lines up; another order or type goes the general way, with the same
    bytes or the same error as the Python encoder."""
    from producer.frames import FrameDecoder, format_frame

    spec = CATALOGUE["H0STCNT0"]
    schema = raw_schema(spec)
    envelope, columns = schema["fields"][:9], schema["fields"][9:]
    reordered = schema | {"fields": envelope + columns[::-1]}
    fewer = schema | {"fields": envelope + columns[:5]}
    retyped = schema | {
        "fields": [
            f | {"type": ["null", "string"]} if f["name"] == "stck_prpr" else f
            for f in schema["fields"]
        ]
    }
    decoder = FrameDecoder(business_date=lambda: dt.date(2026, 9, 14))
    values = {f.column: None for f in spec.fields} | {"mksc_shrn_iscd": "005930"}
    values |= {"stck_cntg_hour": 34_357_000, "stck_prpr": 62_700, "prdy_ctrt": -0.5}
    frame = format_frame(spec.tr_id, [values])
    for other in (schema, reordered, fewer, retyped):
        native = compile_encoder(other, from_record=True)
        python = compile_python_encoder(other, from_record=True)
        records = decoder.decode(frame, received_at=1, session="s", seq=1)
        assert isinstance(records, list) and type(records[0]).__module__ == "kis_native"
        # Encode first: reading `fields` (as the reference copy does) builds the dict.
        if other is retyped:
            error = _error_class(native, records[0])
            assert error is _error_class(python, _python_record(records[0])) is TypeError
            continue
        ours = native(records[0])
        assert ours == python(_python_record(records[0]))
        assert ours == native(records[0])  # and the same again through the built dict
