"""Avro contracts: raw per-TR schemas (generated), derived-stream schemas, dead letters."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
RAW = ROOT / "raw"
DERIVED = ROOT / "derived"
