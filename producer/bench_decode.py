"""``kis-stream bench decode``: records/s of the frame decoder and decoder + Avro encoder.

The frames are a realistic mix generated from the catalogue (trades 50%, order books 35%,
program trading 10%, everything else 5%; about one frame in ten carries 2-4 records), with
prices on a tick grid that random-walk per symbol and cumulative counters that only grow,
so the value caches see what they would see live. The same run times the naive approach of
the broker's sample code (``pandas.read_csv`` on each payload) for the ratio.

"decode" parses and validates every field of every record (a bad value is a DecodeError
there and then); with the compiled path the records hold the typed values in Rust and
build their ``fields`` dict of Python objects only when it is first read, so the
"decode + fields" row reads it for every record: the cost of the deferred part. "decode +
avro" never reads it (the encoder takes the values straight from Rust).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import click

from producer.avro import FastavroEncoder, RawEncoder, raw_schema, to_avro
from producer.catalogue import Catalogue, TrSpec, load_catalogue
from producer.frames import FrameDecoder, encrypt_payload, format_value
from producer.native import native_module, pure_python

KEY = "abcdefghijklmnopabcdefghijklmnop"
IV = "0123456789abcdef"
MIX: tuple[tuple[str, float], ...] = (
    ("H0STCNT0", 0.30),
    ("H0UNCNT0", 0.10),
    ("H0NXCNT0", 0.10),
    ("H0STASP0", 0.20),
    ("H0NXASP0", 0.10),
    ("H0UNASP0", 0.05),
    ("H0STPGM0", 0.05),
    ("H0NXPGM0", 0.03),
    ("H0UNPGM0", 0.02),
    ("H0STANC0", 0.01),
    ("H0STMKO0", 0.01),
    ("HDFSCNT0", 0.015),
    ("HDFSASP0", 0.01),
    ("H0STCNI0", 0.005),
)


class _Symbol:
    """Per-symbol state so consecutive records look like a live market."""

    def __init__(self, rng: random.Random, code: str) -> None:
        self.code = code
        self.tick = rng.choice([10, 50, 100, 500])
        self.price = self.tick * rng.randint(200, 2000)
        self.volume = rng.randint(10_000, 1_000_000)
        self.amount = self.volume * self.price
        self.seconds = 9 * 3600 + rng.randint(0, 3600)


def _value(rng: random.Random, spec: TrSpec, name: str, ftype: str, sym: _Symbol) -> Any:
    if name in ("MKSC_SHRN_ISCD", "STCK_SHRN_ISCD"):
        return sym.code
    if name in ("RSYM",):
        return "DNAS" + sym.code
    if ftype == "string":
        return rng.choice(["1", "2", "5", "N", "20", "0", ""])
    if ftype == "time":
        return sym.seconds * 1000
    if ftype == "date":
        return (dt.date(2026, 9, 14) - dt.date(1970, 1, 1)).days
    if ftype == "double":
        if spec.venue == "OVERSEAS":
            return round(sym.price / 1000 + rng.randint(-20, 20) / 100, 4)
        return round(rng.uniform(-5, 5), 2)
    # long
    if "ACML" in name or "SMTN" in name or "PBMN" in name or "TOTAL" in name:
        return sym.amount if "PBMN" in name else sym.volume + rng.randint(0, 1000)
    if name.startswith(("ASKP", "BIDP", "STCK_", "ANTC_CNPR", "VI_STND", "KMID", "NMID")) and (
        "RSQN" not in name
    ):
        return sym.price + sym.tick * rng.randint(-10, 10)
    if "VRSS" in name:
        return sym.tick * rng.randint(-30, 30)
    return rng.randint(0, 50_000)


def _cumulative(name: str) -> bool:
    return any(k in name for k in ("ACML", "SMTN", "PBMN", "CSNU", "TOTAL", "CNQN", "TVOL"))


def build_frames(n_frames: int, seed: int = 1, catalogue: Catalogue | None = None) -> list[str]:
    """A reproducible realistic frame mix (see module docstring)."""
    cat = catalogue if catalogue is not None else load_catalogue()
    rng = random.Random(seed)
    symbols = [_Symbol(rng, f"{rng.randint(0, 999_999):06d}") for _ in range(40)]
    tr_ids = [t for t, _ in MIX]
    weights = [w for _, w in MIX]
    frames = []
    previous: dict[tuple[str, str], list[Any]] = {}
    for _ in range(n_frames):
        spec = cat[rng.choices(tr_ids, weights)[0]]
        count = rng.randint(2, 4) if rng.random() < 0.1 else 1
        records = []
        for _ in range(count):
            sym = rng.choice(symbols)
            sym.seconds = min(sym.seconds + rng.randint(0, 2), 15 * 3600 + 30 * 60)
            sym.price = max(sym.tick, sym.price + sym.tick * rng.randint(-1, 1))
            traded = rng.randint(1, 500)
            sym.volume += traded
            sym.amount += traded * sym.price
            # Like a live feed: an update changes the time, the cumulative counters and a
            # few other fields (a couple of book levels, the last price); the rest repeat.
            last = previous.get((sym.code, spec.tr_id))
            values = [
                _value(rng, spec, f.name, f.type, sym)
                if last is None
                or f.type in ("time", "date")
                or _cumulative(f.name)
                or rng.random() < 0.15
                else last[i]
                for i, f in enumerate(spec.fields)
            ]
            previous[(sym.code, spec.tr_id)] = values
            records.append(
                "^".join(format_value(f.type, v) for f, v in zip(spec.fields, values, strict=True))
            )
        payload = "^".join(records)
        if spec.encrypted:
            frames.append(f"1|{spec.tr_id}|{count:03d}|{encrypt_payload(payload, KEY, IV)}")
        else:
            frames.append(f"0|{spec.tr_id}|{count:03d}|{payload}")
    return frames


@dataclass
class Measure:
    name: str
    records: int
    wall_s: float
    cpu_s: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def records_per_cpu_s(self) -> float:
        return self.records / self.cpu_s


def _time(name: str, run: Callable[[], int], repeat: int) -> Measure:
    best: Measure | None = None
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        records = run()
        measure = Measure(name, records, time.perf_counter() - wall, time.process_time() - cpu)
        if best is None or measure.cpu_s < best.cpu_s:
            best = measure
    assert best is not None
    return best


def _new_decoder(catalogue: Catalogue) -> FrameDecoder:
    day = dt.date(2026, 9, 14)
    decoder = FrameDecoder(catalogue, business_date=lambda: day)
    decoder.set_key("H0STCNI0", KEY, IV)
    return decoder


def _paths(catalogue: Catalogue) -> list[tuple[str, FrameDecoder, RawEncoder]]:
    """(label, decoder, encoder): the compiled path when kis_native is usable, and the
    pure-Python reference."""
    paths = []
    if native_module() is not None:
        paths.append(("", _new_decoder(catalogue), _new_encoder(catalogue)))
    with pure_python():
        paths.append((" (pure Python)", _new_decoder(catalogue), _new_encoder(catalogue)))
    return paths


def _new_encoder(catalogue: Catalogue) -> RawEncoder:
    return RawEncoder({spec.tr_id: 1 for spec in catalogue}, catalogue)


def run_decode_bench(
    n_frames: int = 50_000, pandas_frames: int = 2_000, repeat: int = 5
) -> dict[str, Any]:
    catalogue = load_catalogue()
    frames = build_frames(n_frames, catalogue=catalogue)
    results: list[Measure] = []
    for label, decoder, encoder in _paths(catalogue):
        results += _time_paths(label, frames, decoder, encoder, repeat)
    results.append(_time_fastavro(frames[: max(1, n_frames // 10)], catalogue, repeat))
    pandas_measure = _time_pandas(frames[:pandas_frames], catalogue)
    if pandas_measure is not None:
        results.append(pandas_measure)
    kinds = Counter(catalogue[f.split("|", 2)[1]].kind for f in frames)
    return {
        "frames": len(frames),
        "records": results[0].records,
        "native": native_module() is not None,
        "kinds": dict(kinds),
        "results": [
            {
                "name": m.name,
                "records": m.records,
                "records_per_s": round(m.records_per_s),
                "records_per_cpu_s": round(m.records_per_cpu_s),
                "us_per_record": round(m.cpu_s / m.records * 1e6, 2),
            }
            for m in results
        ],
        "machine": machine(),
    }


def _time_paths(
    label: str, frames: list[str], decoder: FrameDecoder, encoder: RawEncoder, repeat: int
) -> list[Measure]:
    """Decode alone, decode + every record's `fields` dict, then decode + Avro encode,
    with one decoder/encoder pair."""
    decode = decoder.decode

    def decode_only() -> int:
        records = 0
        for seq, frame in enumerate(frames):
            result = decode(frame, received_at=1_789_000_000_000_000, session="b", seq=seq)
            records += len(result)  # type: ignore[arg-type]
        return records

    def decode_fields() -> int:
        records = 0
        for seq, frame in enumerate(frames):
            result = decode(frame, received_at=1_789_000_000_000_000, session="b", seq=seq)
            for record in result:  # type: ignore[union-attr]
                record.fields  # noqa: B018 (built on first access)
            records += len(result)  # type: ignore[arg-type]
        return records

    def decode_encode() -> int:
        records = 0
        encode = encoder.encode
        for seq, frame in enumerate(frames):
            result = decode(frame, received_at=1_789_000_000_000_000, session="b", seq=seq)
            for record in result:  # type: ignore[union-attr]
                encode(record)
            records += len(result)  # type: ignore[arg-type]
        return records

    errors = [f for f in frames[:1000] if not isinstance(decode(f, received_at=0), list)]
    if errors:
        raise RuntimeError(f"benchmark frames do not decode: {errors[0][:80]!r}")
    return [
        _time(f"decode{label}", decode_only, repeat),
        _time(f"decode + fields{label}", decode_fields, repeat),
        _time(f"decode + avro{label}", decode_encode, repeat),
    ]


def _time_fastavro(frames: list[str], catalogue: Catalogue, repeat: int) -> Measure:
    """The same decode + encode with fastavro's schemaless_writer (for comparison)."""
    with pure_python():
        decoder = _new_decoder(catalogue)
    encoders = {spec.tr_id: FastavroEncoder(raw_schema(spec), 1) for spec in catalogue}

    def run() -> int:
        records = 0
        for seq, frame in enumerate(frames):
            result = decoder.decode(frame, received_at=1_789_000_000_000_000, seq=seq)
            for record in result:  # type: ignore[union-attr]
                encoders[record.tr_id].encode(to_avro(record))
            records += len(result)  # type: ignore[arg-type]
        return records

    return _time("decode (pure Python) + avro via fastavro", run, max(1, repeat // 2))


def _time_pandas(frames: list[str], catalogue: Catalogue) -> Measure | None:
    """The broker sample's way: split the header, then pandas.read_csv on each payload."""
    try:
        import pandas as pd
    except ImportError:
        return None
    decoder = _new_decoder(catalogue)

    def naive() -> int:
        records = 0
        for frame in frames:
            _, tr_id, count, payload = frame.split("|", 3)
            if frame[0] == "1":
                payload = decoder._decrypt(tr_id, payload)  # type: ignore[assignment]
            table = pd.read_csv(StringIO(payload), header=None, sep="^", dtype=object)
            records += int(count) if len(table) else 0
        return records

    return _time("pandas read_csv (broker sample)", naive, 1)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "load_avg_1m": round(load[0], 2),
    }


@click.command("decode")
@click.option("--frames", "n_frames", default=50_000, show_default=True)
@click.option("--pandas-frames", default=2_000, show_default=True)
@click.option("--repeat", default=5, show_default=True, help="Best of N runs (by CPU time).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def decode_bench(n_frames: int, pandas_frames: int, repeat: int, as_json: bool) -> None:
    """Records/s: decode alone, decode + Avro encode, and the pandas read_csv baseline."""
    report = run_decode_bench(n_frames, pandas_frames, repeat)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    m = report["machine"]
    click.echo(
        f"{report['frames']} frames, {report['records']} records, mix {report['kinds']}\n"
        f"machine: {m['cpu']} x{m['cpus']}, Python {m['python']}, load {m['load_avg_1m']}\n"
        + ("compiled path: kis_native" if report["native"] else "kis_native NOT in use")
    )
    click.echo(f"{'path':42s} {'records/s':>12s} {'rec/CPU-s':>12s} {'us/record':>10s}")
    for r in report["results"]:
        click.echo(
            f"{r['name']:42s} {r['records_per_s']:>12,} {r['records_per_cpu_s']:>12,} "
            f"{r['us_per_record']:>10}"
        )
    by_name = {r["name"]: r for r in report["results"]}
    naive = by_name.get("pandas read_csv (broker sample)")
    if naive:
        for name in ("decode", "decode (pure Python)"):
            if name in by_name:
                ratio = by_name[name]["records_per_cpu_s"] / naive["records_per_cpu_s"]
                click.echo(f"{name} vs pandas (per CPU-s): {ratio:.0f}x")
