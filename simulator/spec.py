"""The simulator's view of the TR catalogue: which TRs exist and their field order.

The catalogue is the project's single source of field orders (producer/catalogue.py). Only
names and a few TR attributes are needed here; generating frames must not borrow any of
the decoder's logic, so the simulator stays an independent oracle of the wire format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TrLayout:
    tr_id: str
    venue: str
    kind: str
    encrypted: bool
    paper_tr_id: str | None
    names: tuple[str, ...]


_FALLBACK_FILES = (
    Path(__file__).resolve().parent.parent / "producer" / "catalogue.json",
    Path("/work/shared/kis/trs.json"),
)


def _from_catalogue() -> dict[str, TrLayout] | None:
    try:
        from producer.catalogue import load_catalogue
    except ImportError:
        return None
    layouts: dict[str, TrLayout] = {}
    for spec in load_catalogue():
        layouts[spec.tr_id] = TrLayout(
            tr_id=spec.tr_id,
            venue=spec.venue,
            kind=spec.kind,
            encrypted=bool(spec.encrypted),
            paper_tr_id=spec.paper_tr_id,
            names=tuple(f.name for f in spec.fields),
        )
    return layouts


def _from_json(path: Path) -> dict[str, TrLayout]:
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data["trs"] if isinstance(data, dict) else data
    return {
        e["tr_id"]: TrLayout(
            tr_id=e["tr_id"],
            venue=e["venue"],
            kind=e["kind"],
            encrypted=bool(e.get("encrypted", False)),
            paper_tr_id=e.get("paper_tr_id"),
            names=tuple(f["name"] for f in e["fields"]),
        )
        for e in entries
    }


@cache
def load_layouts() -> dict[str, TrLayout]:
    """tr_id -> layout for every TR of the catalogue (real ids only)."""
    layouts = _from_catalogue()
    if layouts:
        return layouts
    for path in _FALLBACK_FILES:
        if path.exists():
            return _from_json(path)
    raise FileNotFoundError("no TR catalogue found (producer/catalogue.py or trs.json)")


@cache
def paper_aliases() -> dict[str, str]:
    """Paper-trading tr_id -> the real tr_id whose layout it shares (H0STCNI9 -> H0STCNI0)."""
    return {
        lay.paper_tr_id: lay.tr_id
        for lay in load_layouts().values()
        if lay.paper_tr_id and lay.paper_tr_id != lay.tr_id
    }


def canonical_tr_id(tr_id: str) -> str | None:
    """The catalogue tr_id a subscription tr_id refers to, or None if unknown."""
    if tr_id in load_layouts():
        return tr_id
    return paper_aliases().get(tr_id)
