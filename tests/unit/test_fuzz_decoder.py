"""Fuzz: 120,000 mutated frames through the decoder; nothing escapes, everything is classified.

A seeded random loop (not hypothesis) keeps it reproducible and inside ~20 s. Every result
must be either records that are fully typed and Avro-encodable, or a DecodeError whose
reason starts with a known code (never ``internal``) and which carries the raw frame.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from producer.avro import RawEncoder
from producer.catalogue import load_catalogue
from producer.frames import REASON_CODES, FrameDecoder, encrypt_payload, reason_code
from producer.records import DecodeError

FRAMES = 120_000
SEED = 20260914
KEY = "abcdefghijklmnopabcdefghijklmnop"
IV = "0123456789abcdef"
CATALOGUE = load_catalogue()
PY_TYPES = {"string": str, "long": int, "double": float, "time": int, "date": int}
JUNK_ALPHABET = "0123456789^|^|^^-+.eE (null)가\x00\xff\ud7a3 \t\n"


def _seed_frames(rng: random.Random) -> list[str]:
    golden = json.loads((Path(__file__).parent / "golden" / "real_frames.json").read_text("utf-8"))
    frames = [c["frame"] for c in golden if "frame" in c]
    for spec in CATALOGUE:
        for count in (1, 3):
            rows = []
            for _ in range(count):
                row = []
                for f in spec.fields:
                    row.append(
                        {
                            "string": "005930",
                            "long": str(rng.randint(-(10**9), 10**12)),
                            "double": f"{rng.uniform(-100, 1000):.4f}",
                            "time": f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}00",
                            "date": "20260914",
                        }[f.type]
                    )
                rows.append("^".join(row))
            payload = "^".join(rows)
            for tr_id in spec.tr_ids:
                if spec.encrypted:
                    frames.append(f"1|{tr_id}|{count:03d}|{encrypt_payload(payload, KEY, IV)}")
                frames.append(f"0|{tr_id}|{count:03d}|{payload}")
    return frames


def _mutators(rng: random.Random) -> list[Callable[[str], str | bytes]]:
    def flip(s: str) -> str:
        i = rng.randrange(len(s))
        return s[:i] + rng.choice(JUNK_ALPHABET) + s[i + 1 :]

    def truncate(s: str) -> str:
        return s[: rng.randrange(len(s))]

    def insert_field(s: str) -> str:
        parts = s.split("^")
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(["", "1", "x", "(null)", "-0.5"]))
        return "^".join(parts)

    def delete_field(s: str) -> str:
        parts = s.split("^")
        if len(parts) > 1:
            del parts[rng.randrange(len(parts))]
        return "^".join(parts)

    def change_count(s: str) -> str:
        parts = s.split("|", 3)
        if len(parts) == 4:
            parts[2] = rng.choice(
                [f"{rng.randint(0, 999):03d}", "", "1", "abc", "-01", "0001", "९९९"]
            )
        return "|".join(parts)

    def change_tr(s: str) -> str:
        parts = s.split("|", 3)
        if len(parts) == 4:
            parts[1] = rng.choice([*sorted(CATALOGUE.all_tr_ids), "H0STCNT1", "", "PINGPONG"])
        return "|".join(parts)

    def change_enc(s: str) -> str:
        return rng.choice("012x") + s[1:]

    def junk(_: str) -> str:
        return "".join(rng.choice(JUNK_ALPHABET) for _ in range(rng.randrange(0, 200)))

    def splice(s: str) -> str:
        i, j = sorted(rng.randrange(len(s) + 1) for _ in range(2))
        return s[:i] + s[j:] + s[i:j]

    def to_bytes(s: str) -> bytes:
        data = bytearray(s.encode("utf-8", "surrogatepass"))
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    def many(s: str) -> str:
        for _ in range(rng.randint(2, 6)):
            s = rng.choice([flip, insert_field, delete_field, splice])(s) or "x"
        return s

    return [
        flip,
        truncate,
        insert_field,
        delete_field,
        change_count,
        change_tr,
        change_enc,
        junk,
        splice,
        to_bytes,
        many,
    ]


def test_fuzz_decoder_never_raises_and_classifies_everything() -> None:
    rng = random.Random(SEED)
    seeds = _seed_frames(rng)
    mutators = _mutators(rng)
    decoder = FrameDecoder(business_date=lambda: dt.date(2026, 9, 14))
    for spec in CATALOGUE:
        if spec.encrypted:
            for tr_id in spec.tr_ids:
                decoder.set_key(tr_id, KEY, IV)
    encoder = RawEncoder({spec.tr_id: 1 for spec in CATALOGUE})
    columns = {spec.tr_id: {f.column: f.type for f in spec.fields} for spec in CATALOGUE}
    outcomes: Counter[str] = Counter()
    for n in range(FRAMES):
        seed = seeds[n % len(seeds)]
        frame = mutators[n % len(mutators)](seed) if seed else seed
        result = decoder.decode(frame, received_at=n, session="fuzz", seq=n)
        if isinstance(result, DecodeError):
            code = reason_code(result.reason)
            assert code in REASON_CODES and code != "internal", (frame, result.reason)
            assert result.raw is frame and result.seq == n
            outcomes[code] += 1
            continue
        assert isinstance(result, list) and result, frame
        for record in result:
            types = columns[record.tr_id]
            assert record.fields.keys() == types.keys()
            for column, value in record.fields.items():
                assert value is None or type(value) is PY_TYPES[types[column]], (column, value)
            assert isinstance(record.symbol, str) and record.symbol
            assert record.event_time is None or type(record.event_time) is int
            assert record.extra is None or all(isinstance(x, str) for x in record.extra)
            encoder.encode(record)  # decoded records always fit their Avro schema
        outcomes["ok"] += 1
    assert sum(outcomes.values()) == FRAMES
    # Not vacuous: plenty of both outcomes, and the main error classes all occur.
    assert outcomes["ok"] > FRAMES // 20
    for code in ("malformed", "unknown_tr", "bad_count", "width", "bad_number", "decrypt", "utf8"):
        assert outcomes[code] > 100, outcomes
