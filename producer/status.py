"""Session status events for `kis.status`: connects, subscriptions and gaps.

Downstream reads `gap` events to know where data may be missing (KIS has no replay).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import fastavro

from schemas import ROOT

STATUS_SCHEMA_PATH = ROOT / "status.avsc"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    event: str
    session: str
    at: int
    """UTC epoch microseconds."""
    connection: str | None = None
    gap_from: int | None = None
    gap_to: int | None = None
    reason: str | None = None
    tr_id: str | None = None
    tr_key: str | None = None
    subscriptions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def status_schema_text() -> str:
    return STATUS_SCHEMA_PATH.read_text()


@cache
def _parsed() -> Any:
    return fastavro.parse_schema(json.loads(status_schema_text()))


def encode_status(event: StatusEvent) -> bytes:
    """Avro binary body (without the Confluent header) of one status event."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _parsed(), event.as_dict())
    return out.getvalue()
