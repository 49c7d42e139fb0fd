"""The KIS real-time TR catalogue: field order and verified types of every TR, as data.

The decoder, the Avro schemas and the simulator all read `producer/catalogue.json` through
this module, so a field KIS appends is added in one place. Types:

- ``string``: codes, names, symbols, account and order numbers (leading zeros kept);
- ``long``: domestic prices (whole KRW), quantities, counts, cumulative amounts (64-bit);
- ``double``: rates, averages, strengths and every overseas price/amount;
- ``time``: ``HHMMSS`` in Korea time -> int milliseconds since midnight (Avro time-millis);
- ``date``: ``YYYYMMDD`` -> int days since 1970-01-01 (Avro date).

Each TR names the field that is its ``symbol`` (the Kafka key): the first field for market
data (it equals the subscription's tr_key, e.g. ``005930`` or ``DNASAAPL``); for the two
execution notices, whose first field is the HTS id used as tr_key, it is ``STCK_SHRN_ISCD``
so that ``symbol`` always means an instrument (the HTS id stays in ``cust_id``).
``date_field``/``time_field`` give the event time (Korea time); a TR with a time but no date
(order books, program trading, domestic notices) takes the date from the session.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from kis_stream.topics import raw_topic

CATALOGUE_PATH = Path(__file__).resolve().parent / "catalogue.json"

FieldType = Literal["string", "long", "double", "time", "date"]
FIELD_TYPES: frozenset[str] = frozenset({"string", "long", "double", "time", "date"})
VENUES: frozenset[str] = frozenset({"KRX", "NXT", "UN", "KR", "OVERSEAS"})
KINDS: frozenset[str] = frozenset(
    {"trade", "book", "expected", "program", "market_status", "notice"}
)


def snake_case(kis_name: str) -> str:
    """KIS upper-case field name -> Avro/JSON column name (``STCK_PRPR`` -> ``stck_prpr``)."""
    column = kis_name.lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", column):
        raise ValueError(f"KIS field name {kis_name!r} is not a valid column name")
    return column


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    """KIS upper-case name, e.g. ``STCK_PRPR``."""
    column: str
    """snake_case name used in records, Avro and JSON, e.g. ``stck_prpr``."""
    ko: str
    """Korean meaning (from the KIS documentation), used as Avro doc."""
    type: FieldType
    since: str | None = None
    """When KIS appended this field (frames from before are shorter), else None."""


@dataclass(frozen=True, slots=True)
class TrSpec:
    tr_id: str
    name: str
    venue: str
    kind: str
    encrypted: bool
    paper_tr_id: str | None
    fields: tuple[FieldSpec, ...]
    symbol_field: str
    date_field: str | None = None
    time_field: str | None = None
    layouts: Mapping[int, tuple[str | None, ...]] = field(default_factory=dict, compare=False)
    """Older widths whose order is not a plain prefix: position -> KIS name (None: a
    field the current layout no longer has; the decoder keeps it in ``extra``)."""
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: i for i, f in enumerate(self.fields)})
        if len(self._index) != len(self.fields):
            raise ValueError(f"{self.tr_id}: duplicate field names")
        refs = [self.symbol_field, self.date_field, self.time_field]
        for names in self.layouts.values():
            refs += [n for n in names if n is not None]
            if self.symbol_field not in names:
                raise ValueError(f"{self.tr_id}: a layout lacks the symbol field")
        for ref in refs:
            if ref is not None and ref not in self._index:
                raise ValueError(f"{self.tr_id}: unknown field {ref!r}")

    @property
    def topic(self) -> str:
        """The raw Kafka topic of this TR (``kis.h0stcnt0``)."""
        return raw_topic(self.tr_id)

    @property
    def width(self) -> int:
        """Number of fields per record in the catalogue (the newest known layout)."""
        return len(self.fields)

    @property
    def known_widths(self) -> frozenset[int]:
        """Widths KIS has sent: the full layout minus any tail of ``since`` fields."""
        widths = {self.width, *self.layouts}
        n = self.width
        while n > 0 and self.fields[n - 1].since is not None:
            n -= 1
            widths.add(n)
        return frozenset(widths)

    @property
    def tr_ids(self) -> tuple[str, ...]:
        """Every tr_id that carries this TR (real, and paper when it differs)."""
        if self.paper_tr_id and self.paper_tr_id != self.tr_id:
            return (self.tr_id, self.paper_tr_id)
        return (self.tr_id,)

    def index_of(self, kis_name: str) -> int:
        """Position of a field by KIS name (KeyError when the TR has no such field)."""
        return self._index[kis_name]

    def field_named(self, kis_name: str) -> FieldSpec:
        return self.fields[self._index[kis_name]]

    @property
    def symbol_index(self) -> int:
        return self._index[self.symbol_field]


class Catalogue:
    """All TR specs, looked up by real or paper tr_id."""

    def __init__(self, specs: tuple[TrSpec, ...]) -> None:
        self._specs = specs
        self._by_id: dict[str, TrSpec] = {}
        for spec in specs:
            for tr_id in spec.tr_ids:
                if tr_id in self._by_id:
                    raise ValueError(f"duplicate tr_id {tr_id}")
                self._by_id[tr_id] = spec

    def get(self, tr_id: str) -> TrSpec | None:
        """The spec for a tr_id (paper ids like ``H0STCNI9`` resolve to their TR)."""
        return self._by_id.get(tr_id)

    def __getitem__(self, tr_id: str) -> TrSpec:
        spec = self._by_id.get(tr_id)
        if spec is None:
            raise KeyError(tr_id)
        return spec

    def __contains__(self, tr_id: object) -> bool:
        return tr_id in self._by_id

    def __iter__(self) -> Iterator[TrSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def all_tr_ids(self) -> frozenset[str]:
        """Every accepted tr_id, real and paper."""
        return frozenset(self._by_id)


def _field_from_json(raw: dict[str, object]) -> FieldSpec:
    name = str(raw["name"])
    ftype = str(raw["type"])
    if ftype not in FIELD_TYPES:
        raise ValueError(f"field {name}: unknown type {ftype!r}")
    since = raw.get("since")
    return FieldSpec(
        name=name,
        column=snake_case(name),
        ko=str(raw.get("ko") or ""),
        type=ftype,  # type: ignore[arg-type]
        since=str(since) if since is not None else None,
    )


def _spec_from_json(raw: dict[str, object]) -> TrSpec:
    tr_id = str(raw["tr_id"])
    venue, kind = str(raw["venue"]), str(raw["kind"])
    if venue not in VENUES or kind not in KINDS:
        raise ValueError(f"{tr_id}: bad venue {venue!r} or kind {kind!r}")
    fields_raw = raw["fields"]
    assert isinstance(fields_raw, list)
    paper = raw.get("paper_tr_id")
    date_field, time_field = raw.get("date_field"), raw.get("time_field")
    layouts_raw = raw.get("layouts") or {}
    assert isinstance(layouts_raw, dict)
    layouts = {
        int(width): tuple(None if n is None else str(n) for n in names)
        for width, names in layouts_raw.items()
    }
    return TrSpec(
        tr_id=tr_id,
        name=str(raw["name"]),
        venue=venue,
        kind=kind,
        encrypted=bool(raw["encrypted"]),
        paper_tr_id=str(paper) if paper else None,
        fields=tuple(_field_from_json(f) for f in fields_raw),
        symbol_field=str(raw["symbol_field"]),
        date_field=str(date_field) if date_field else None,
        time_field=str(time_field) if time_field else None,
        layouts=layouts,
    )


def parse_catalogue(text: str) -> Catalogue:
    """Build a catalogue from the JSON text of a catalogue file."""
    doc = json.loads(text)
    return Catalogue(tuple(_spec_from_json(t) for t in doc["trs"]))


@cache
def load_catalogue() -> Catalogue:
    """The packaged catalogue (parsed once per process)."""
    return parse_catalogue(CATALOGUE_PATH.read_text(encoding="utf-8"))
