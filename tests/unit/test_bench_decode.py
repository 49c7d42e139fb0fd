"""`kis-stream bench decode` runs end to end on a small mix and reports every row.

No speed is asserted (speed goes in docs/benchmarks.md); what is checked is that each row
decodes the whole mix (the same record count everywhere) and that the rows the docs
discuss are there, including the one that builds every record's `fields`.
"""

from __future__ import annotations

from click.testing import CliRunner

from producer.bench_decode import build_frames, decode_bench, run_decode_bench
from producer.native import native_module


def test_report_has_every_row_over_the_whole_mix() -> None:
    report = run_decode_bench(n_frames=300, pandas_frames=20, repeat=1)
    by_name = {r["name"]: r for r in report["results"]}
    expected = {
        "decode (pure Python)",
        "decode + fields (pure Python)",
        "decode + avro (pure Python)",
        "decode (pure Python) + avro via fastavro",
    }
    if native_module() is not None:
        expected |= {"decode", "decode + fields", "decode + avro"}
    assert expected <= set(by_name)
    for name in expected - {"decode (pure Python) + avro via fastavro"}:
        assert by_name[name]["records"] == report["records"], name
    assert report["records"] > 300  # some frames carry several records
    assert report["native"] is (native_module() is not None)


def test_command_prints_the_table() -> None:
    result = CliRunner().invoke(
        decode_bench, ["--frames", "200", "--pandas-frames", "10", "--repeat", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "decode + fields" in result.output and "vs pandas" in result.output


def test_frames_are_reproducible() -> None:
    assert build_frames(50, seed=3) == build_frames(50, seed=3)
    assert build_frames(50, seed=3) != build_frames(50, seed=4)
