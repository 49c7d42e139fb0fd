"""What a session's frames become: the kis.frames Avro record, its key, the recording file."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import fastavro
import pytest

from producer.frames_topic import encode_frame, frame_key, frame_tr_id, frames_schema_text
from producer.record_file import FrameRecorder, read_recording
from producer.status import StatusEvent, encode_status, status_schema_text

FRAMES_SCHEMA = fastavro.parse_schema(json.loads(frames_schema_text()))


@pytest.mark.parametrize(
    ("raw", "tr_id", "seq"),
    [
        (b"0|H0STCNT0|001|005930^093001^71000", "H0STCNT0", 1),
        (b'{"header":{"tr_id":"H0STCNT0"}}', None, 2**40),
        (b"1|H0STCNI0|001|\xff\xfe not utf-8", "H0STCNI0", 0),
        (b"", None, 7),
    ],
)
def test_frame_record_matches_the_schema(raw: bytes, tr_id: str | None, seq: int) -> None:
    received_at = 1_795_000_000_123_456
    body = encode_frame(raw, received_at, "s0.abc.1", seq, tr_id)
    datum = fastavro.schemaless_reader(io.BytesIO(body), FRAMES_SCHEMA, None)
    assert isinstance(datum, dict)
    assert datum["frame"] == raw
    ts = datum["received_at"]
    assert int(ts.timestamp() * 1_000_000) == received_at
    assert datum["session"] == "s0.abc.1" and datum["seq"] == seq and datum["tr_id"] == tr_id


def test_negative_and_large_varints_round_trip() -> None:
    for value in (-1, -(2**63), 2**63 - 1, 0, 63, 64, -64, -65):
        body = encode_frame(b"x", 0, "", value, None)
        datum = fastavro.schemaless_reader(io.BytesIO(body), FRAMES_SCHEMA, None)
        assert isinstance(datum, dict) and datum["seq"] == value


def test_tr_id_and_key_are_read_cheaply_from_plain_frames_only() -> None:
    plain = b"0|H0STASP0|002|005930^090000^1^000660^090000^2"
    assert frame_tr_id(plain) == "H0STASP0"
    assert frame_key(plain, "H0STASP0") == b"005930"
    encrypted = b"1|H0STCNI0|001|c2VjcmV0"
    assert frame_tr_id(encrypted) == "H0STCNI0" and frame_key(encrypted, "H0STCNI0") is None
    assert frame_tr_id(b'{"header":{}}') is None
    assert frame_tr_id(b"0|bad id|001|x") is None
    assert frame_key(b"0|H0STCNT0|001|no-caret-here", "H0STCNT0") is None


def test_status_event_matches_the_schema() -> None:
    schema = fastavro.parse_schema(json.loads(status_schema_text()))
    event = StatusEvent("gap", "s1", 10, connection="s1.x.2", gap_from=5, gap_to=9, reason="r")
    datum = fastavro.schemaless_reader(io.BytesIO(encode_status(event)), schema, None)
    assert isinstance(datum, dict)
    assert datum["event"] == "gap" and datum["connection"] == "s1.x.2"
    assert datum["gap_from"] is not None and datum["tr_id"] is None


def test_recording_is_gzip_jsonl_and_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "frames.jsonl.gz"
    first = FrameRecorder(path)
    first.write(1, b"0|H0STCNT0|001|005930^1")
    first.write(2, b"bad \xff byte")
    first.close()
    second = FrameRecorder(path)
    second.write(3, b'{"header":{"tr_id":"H0STCNT0"}}')
    second.close()
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines[0] == {"received_at": 1, "frame": "0|H0STCNT0|001|005930^1"}
    assert set(lines[1]) == {"received_at", "frame"}
    assert read_recording(path) == [
        (1, "0|H0STCNT0|001|005930^1"),
        (2, "bad \ufffd byte"),
        (3, '{"header":{"tr_id":"H0STCNT0"}}'),
    ]
