"""The compiled decoder path (kis_native) against the pure-Python reference.

Every frame is decoded twice, by a decoder using kis_native and by one built with
KIS_STREAM_PURE_PYTHON=1, and the outcomes must be identical to the byte: the same
records (same values, value types, key order, -0.0 vs 0.0; compared through ``repr``) or
the same DecodeError reason, and the same drift/error counters. The native records keep
their values in Rust and build ``fields`` on first access, so each comparison first
Avro-encodes them untouched (the encoder reads the Rust values) and checks the bytes
against the pure-Python records through the pure-Python encoder, and only then reads
``fields``. Inputs: the golden real frames, hypothesis-generated valid and hostile
payloads for every TR, and the fuzz corpus of tests/unit/test_fuzz_decoder.py.

In CI the extension must be present: these tests fail when it is missing, unless
KIS_STREAM_PURE_PYTHON=1 says the run is pure Python on purpose (then they are skipped).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.avro import RawEncoder
from producer.catalogue import TrSpec, load_catalogue
from producer.frames import FrameDecoder, encrypt_payload, format_record
from producer.native import (
    PURE_PYTHON_ENV,
    native_module,
    pure_python,
    pure_python_forced,
    unavailable_reason,
)
from producer.records import DecodeError, Record
from tests.unit.test_fuzz_decoder import _mutators, _seed_frames

pytestmark = pytest.mark.skipif(
    pure_python_forced(), reason=f"{PURE_PYTHON_ENV}=1: pure Python on purpose"
)

CATALOGUE = load_catalogue()
KEY = "abcdefghijklmnopabcdefghijklmnop"
IV = "0123456789abcdef"
DAY = dt.date(2026, 9, 14)


def _decoders() -> tuple[FrameDecoder, FrameDecoder]:
    native = FrameDecoder(business_date=lambda: DAY)
    with pure_python():
        pure = FrameDecoder(business_date=lambda: DAY)
    for decoder in (native, pure):
        for spec in CATALOGUE:
            if spec.encrypted:
                for tr_id in spec.tr_ids:
                    decoder.set_key(tr_id, KEY, IV)
    return native, pure


def _outcome(result: list[Record] | DecodeError) -> str:
    """Everything a consumer can observe, exactly (repr keeps key order, types, -0.0)."""
    if isinstance(result, DecodeError):
        return f"error {result.reason!r} {result.raw!r} {result.tr_id!r}"
    return repr([(r, list(r.fields.items())) for r in result])


@cache
def _encoders() -> tuple[RawEncoder, RawEncoder]:
    """(native, pure-Python) encoders of every raw schema."""
    ids = {spec.tr_id: 5 for spec in CATALOGUE}
    native = RawEncoder(ids)
    with pure_python():
        return native, RawEncoder(ids)


def _encoded(encode: Callable[[Record], bytes], records: list[Record]) -> list[Any]:
    out: list[Any] = []
    for record in records:
        try:
            out.append(encode(record))
        except Exception as exc:  # a record the schema cannot take: the same class either way
            out.append(type(exc))
    return out


def _assert_same(native: FrameDecoder, pure: FrameDecoder, frame: str | bytes, seq: int) -> str:
    a = native.decode(frame, received_at=seq, session="s", seq=seq)
    b = pure.decode(frame, received_at=seq, session="s", seq=seq)
    if isinstance(a, list) and isinstance(b, list):
        # Before anything reads `fields`: the native encoder writes the Rust values.
        native_encoder, pure_encoder = _encoders()
        assert _encoded(native_encoder.encode, a) == _encoded(pure_encoder.encode, b), frame
    assert _outcome(a) == _outcome(b), frame
    return "ok" if isinstance(a, list) else a.reason.split(":", 1)[0]


def test_native_extension_is_in_use() -> None:
    assert native_module() is not None, (
        f"kis_native is not usable: {unavailable_reason()}; build it with `make venv` "
        f"(or run with {PURE_PYTHON_ENV}=1 for a pure-Python run)"
    )
    native, pure = _decoders()
    assert native.native and not pure.native


def test_golden_real_frames_decode_identically() -> None:
    golden = json.loads((Path(__file__).parent / "golden" / "real_frames.json").read_text("utf-8"))
    native, pure = _decoders()
    decoded = 0
    for case in golden:
        if "frame" not in case:
            continue
        if "key" in case:
            for decoder in (native, pure):
                decoder.set_key(case.get("tr_id") or case["frame"].split("|")[1], *_key(case))
        decoded += _assert_same(native, pure, case["frame"], 1) == "ok"
    assert decoded >= 10


def _key(case: dict[str, Any]) -> tuple[str, str]:
    return case["key"], case["iv"]


# --- hypothesis: valid and hostile payloads for every TR --------------------------------

_TEXT_BY_TYPE = {
    "string": st.sampled_from(["005930", "N", "1", "", "(null)", "가나", " x "]),
    "long": st.integers(-(2**63), 2**63 - 1).map(str)
    | st.sampled_from(["0", "-0", "+5", "007", "1_000", "9223372036854775808", "", "(null)"]),
    "double": st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.sampled_from(["-0", "-0.0", "+0.11", ".5", "5.", "1e5", "1e400", "-", "", "(null)"]),
    "time": st.sampled_from(["090000", "235959", "240000", "0930", "(null)", "", "000000"]),
    "date": st.sampled_from(["20260914", "00000000", "20240229", "20230229", "00010101", ""]),
}
_HOSTILE = st.sampled_from(
    ["", "(null)", "-0", "+-1", "٣", "1e5", "nan", "inf", " 5", "0x10", "\x00", "가", "00000000"]
) | st.text(alphabet="0123456789.-+eE (nul)", max_size=8)


@st.composite
def payloads(draw: st.DrawFn, spec: TrSpec) -> tuple[int, str]:
    """(count, payload): mostly well-typed field texts, some hostile, some odd widths."""
    count = draw(st.integers(1, 3))
    width = draw(st.sampled_from([spec.width, *sorted(spec.known_widths), spec.width + 1]))
    hostile = draw(st.floats(0, 0.3))
    rows = []
    for _ in range(count):
        row = []
        for i in range(width):
            ftype = spec.fields[i].type if i < len(spec.fields) else "string"
            use_hostile = draw(st.floats(0, 1)) < hostile
            row.append(draw(_HOSTILE if use_hostile else _TEXT_BY_TYPE[ftype]))
        rows.append("^".join(row))
    return count, "^".join(rows)


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_every_tr_same_records_or_same_error(spec: TrSpec, data: st.DataObject) -> None:
    native, pure = _decoders()
    count, payload = data.draw(payloads(spec))
    tr_id = data.draw(st.sampled_from(sorted(spec.tr_ids)))
    frames = [f"0|{tr_id}|{count:03d}|{payload}"]
    if spec.encrypted:
        frames.append(f"1|{tr_id}|{count:03d}|{encrypt_payload(payload, KEY, IV)}")
    for frame in frames:
        _assert_same(native, pure, frame, 7)
    assert native.drift == pure.drift and native.errors == pure.errors


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
def test_every_tr_clean_frame_takes_the_native_path(spec: TrSpec) -> None:
    """Not vacuous: a regular frame is typed natively (no fallback), and equally."""
    native, pure = _decoders()
    values = {
        f.column: {"string": "005930", "long": -42, "double": 1.5, "time": 3_600_000, "date": 1}[
            f.type
        ]
        for f in spec.fields
    }
    payload = "^".join(format_record(spec, values) * 2)
    layout = native._plans[spec.tr_id].layouts[spec.width]
    assert layout.native is not None
    typed = layout.native.convert("^".join(format_record(spec, values)), 1)
    assert typed is not None and typed[0] == values
    assert list(typed[0]) == list(layout.convert(format_record(spec, values)))
    _assert_same(native, pure, f"0|{spec.tr_id}|002|{payload}", 3)


# --- the fuzz corpus ------------------------------------------------------------------------


def test_fuzz_corpus_identical_either_way() -> None:
    rng = random.Random(20261121)
    seeds = _seed_frames(rng)
    mutators = _mutators(rng)
    native, pure = _decoders()
    outcomes: dict[str, int] = {}
    frames = 30_000
    for n in range(frames):
        seed = seeds[n % len(seeds)]
        frame = mutators[n % len(mutators)](seed)
        code = _assert_same(native, pure, frame, n)
        outcomes[code] = outcomes.get(code, 0) + 1
    assert native.drift == pure.drift and native.errors == pure.errors
    assert "internal" not in outcomes
    assert outcomes["ok"] > frames // 20 and outcomes["bad_number"] > 100, outcomes


def test_business_date_is_called_as_often_either_way() -> None:
    """FrameCore calls business_date() exactly when the Python path would (a session's
    callable may have side effects), and its exceptions become the same error."""
    calls = {"native": 0, "pure": 0}

    def counting(kind: str) -> Any:
        def business_date() -> dt.date:
            calls[kind] += 1
            return DAY

        return business_date

    native = FrameDecoder(business_date=counting("native"))
    with pure_python():
        pure = FrameDecoder(business_date=counting("pure"))
    book, trade = CATALOGUE["H0STASP0"], CATALOGUE["H0STCNT0"]
    book_row = format_record(book, {f.column: None for f in book.fields})
    book_row[0], book_row[1] = "005930", "090000"
    trade_row = format_record(trade, {f.column: None for f in trade.fields})
    trade_row[0], trade_row[1] = "005930", "090001"  # time, no date: business date per record
    frames = [
        "0|H0STASP0|002|" + "^".join(book_row * 2),
        "0|H0STCNT0|003|" + "^".join(trade_row * 3),
        "0|H0STCNT0|001|" + "^".join(["", *trade_row[1:]]),  # no symbol: no call
    ]
    for n, frame in enumerate(frames):
        _assert_same(native, pure, frame, n)
        assert calls["native"] == calls["pure"], frame
    assert calls["native"] == 1 + 3 + 0

    def failing() -> dt.date:
        raise RuntimeError("calendar down")

    native.business_date = pure.business_date = failing
    a = native.decode(frames[0], received_at=1)
    assert isinstance(a, DecodeError) and a.reason == "internal: RuntimeError: calendar down"
    assert _outcome(a) == _outcome(pure.decode(frames[0], received_at=1))


# --- the lazily built `fields` of kis_native.Record ----------------------------------------


def _native_records(frame: str) -> list[Record]:
    native, _ = _decoders()
    records = native.decode(frame, received_at=11, session="s", seq=2)
    assert isinstance(records, list), records
    assert all(type(r).__module__ == "kis_native" for r in records)
    return records


def _clean_frame(tr_id: str, count: int = 2) -> str:
    spec = CATALOGUE[tr_id]
    values = {
        f.column: {"string": "005930", "long": -42, "double": 1.5, "time": 3_600_000, "date": 1}[
            f.type
        ]
        for f in spec.fields
    }
    values[spec.fields[-1].column] = None  # an empty field: None in `fields`, null in Avro
    return f"0|{tr_id}|{count:03d}|" + "^".join(format_record(spec, values) * count)


def test_plain_and_encrypted_frames_give_native_records() -> None:
    """Not vacuous: the common frames (and decrypted notices) take the lazy path."""
    _native_records(_clean_frame("H0STCNT0"))
    plain = _clean_frame("H0STCNI0", 1).split("|", 3)[3]
    _native_records(f"1|H0STCNI0|001|{encrypt_payload(plain, KEY, IV)}")


@pytest.mark.parametrize("spec", list(CATALOGUE), ids=lambda s: s.tr_id)
def test_encoding_is_the_same_with_or_without_fields_built(spec: TrSpec) -> None:
    frame = _clean_frame(spec.tr_id)
    native_encoder, pure_encoder = _encoders()
    untouched, touched = _native_records(frame), _native_records(frame)
    for record in touched:
        assert record.fields  # built (the encoder then reads the dict)
    _, pure = _decoders()
    reference = pure.decode(frame, received_at=11, session="s", seq=2)
    assert isinstance(reference, list)
    expected = _encoded(pure_encoder.encode, reference)
    assert _encoded(native_encoder.encode, untouched) == expected
    assert _encoded(native_encoder.encode, touched) == expected
    assert untouched == touched == reference and reference == untouched


def test_fields_is_built_once_and_a_changed_dict_is_what_gets_encoded() -> None:
    record = _native_records(_clean_frame("H0STCNT0", 1))[0]
    fields = record.fields
    assert record.fields is fields and fields["stck_prpr"] == -42
    native_encoder, pure_encoder = _encoders()
    fields["stck_prpr"] = 62_700
    copy = Record(**{f.name: getattr(record, f.name) for f in dataclasses.fields(Record)})
    assert native_encoder.encode(record) == pure_encoder.encode(copy)
    assert copy.fields["stck_prpr"] == 62_700
    fields["stck_prpr"] = "not a number"
    with pytest.raises(TypeError):
        native_encoder.encode(record)


def test_native_record_keeps_the_record_contract() -> None:
    frame = _clean_frame("H0STASP0")
    records = _native_records(frame)
    _, pure = _decoders()
    reference = pure.decode(frame, received_at=11, session="s", seq=2)
    assert isinstance(reference, list)
    for record, expected in zip(records, reference, strict=True):
        assert isinstance(record, Record)
        for f in dataclasses.fields(Record):
            assert getattr(record, f.name) == getattr(expected, f.name), f.name
        assert repr(record) == repr(expected)
        assert record == expected and expected == record and (record != expected) is False
    assert records[0] != records[1] and records[0] != reference[1]
    assert records[0] != "Record" and (records[0] == 1) is False
    changed = dataclasses.replace(reference[0], seq=3)
    assert records[0] != changed and changed != records[0]
    with pytest.raises(TypeError):
        hash(records[0])  # like the (mutable) dataclass
    with pytest.raises(AttributeError):
        records[0].symbol = "000660"
