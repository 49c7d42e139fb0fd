"""The compiled decoder path (kis_native) against the pure-Python reference.

Every frame is decoded twice, by a decoder using kis_native and by one built with
KIS_STREAM_PURE_PYTHON=1, and the outcomes must be identical to the byte: the same
records (same values, value types, key order, -0.0 vs 0.0; compared through ``repr``) or
the same DecodeError reason, and the same drift/error counters. Inputs: the golden real
frames, hypothesis-generated valid and hostile payloads for every TR, and the fuzz corpus
of tests/unit/test_fuzz_decoder.py.

In CI the extension must be present: these tests fail when it is missing, unless
KIS_STREAM_PURE_PYTHON=1 says the run is pure Python on purpose (then they are skipped).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _assert_same(native: FrameDecoder, pure: FrameDecoder, frame: str | bytes, seq: int) -> str:
    a = native.decode(frame, received_at=seq, session="s", seq=seq)
    b = pure.decode(frame, received_at=seq, session="s", seq=seq)
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
