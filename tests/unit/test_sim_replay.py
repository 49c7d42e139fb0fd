"""Replay of recorded frames: file formats, routing and pacing."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from simulator.replay import ReplaySource, read_frames, routing

FRAMES = [
    (1_000_000, "0|H0STCNT0|001|005930^090000^71000"),
    (1_500_000, '{"header":{"tr_id":"PINGPONG","datetime":"20261005090000"}}'),
    (2_000_000, "0|H0STASP0|002|000660^090001^1^000660^090001^2"),
    (2_000_000, "1|H0STCNI0|001|c2VjcmV0"),
    (4_000_000, "0|H0STCNT0|001|005930^090003^71100"),
]


def write(path: Path, *, compress: bool) -> Path:
    lines = b"".join(orjson.dumps({"received_at": t, "frame": f}) + b"\n" for t, f in FRAMES)
    lines += b"not json\n" + orjson.dumps({"frame": "no time"}) + b"\n"
    path.write_bytes(gzip.compress(lines) if compress else lines)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_both_gzip_and_plain_jsonl_are_read_and_bad_lines_skipped(
    tmp_path: Path, compress: bool
) -> None:
    path = write(tmp_path / "rec.jsonl.gz", compress=compress)
    assert list(read_frames(path)) == FRAMES


def test_routing_uses_tr_id_and_the_first_field() -> None:
    assert routing("0|H0STASP0|002|000660^1^000660^2") == ("H0STASP0", "000660")
    assert routing("1|H0STCNI0|001|abc") is None
    assert routing('{"header":{}}') is None
    assert routing("0|broken") is None


def test_frames_come_out_at_the_recorded_pace_scaled_by_speed(tmp_path: Path) -> None:
    source = ReplaySource(write(tmp_path / "r.jsonl", compress=False), speed=2.0)
    first = source.due(now=100.0)
    assert [f.raw for f in first] == [FRAMES[0][1]]
    assert source.due(now=100.4) == []  # the book frame is 1 s later = 0.5 s at x2
    second = source.due(now=100.5)
    assert [(f.tr_id, f.key) for f in second] == [("H0STASP0", "000660")]
    assert source.due(now=101.49) == []
    last = source.due(now=101.5)
    assert [f.key for f in last] == ["005930"] and source.done
    assert source.progress()["skipped"] == 2  # PINGPONG and the encrypted notice
