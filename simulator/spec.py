"""The simulator's view of the TR catalogue: which TRs exist and their field order.

The catalogue (producer/catalogue.py) is the project's single source of field orders; only
names and a few TR attributes are taken from it. Generating frames borrows nothing from the
decoder, so the simulator stays an independent oracle of the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from producer.catalogue import load_catalogue


@dataclass(frozen=True, slots=True)
class TrLayout:
    tr_id: str
    venue: str
    kind: str
    encrypted: bool
    paper_tr_id: str | None
    names: tuple[str, ...]


@cache
def load_layouts() -> dict[str, TrLayout]:
    """tr_id -> layout for every TR of the catalogue (real ids only)."""
    return {
        spec.tr_id: TrLayout(
            tr_id=spec.tr_id,
            venue=spec.venue,
            kind=spec.kind,
            encrypted=bool(spec.encrypted),
            paper_tr_id=spec.paper_tr_id,
            names=tuple(f.name for f in spec.fields),
        )
        for spec in load_catalogue()
    }


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
