"""What the decoder hands to the rest of the pipeline: typed records and decode errors.

A `Record` is one KIS record (one of the N in a frame) with its envelope. Its Avro form is
the envelope fields followed by the TR's snake_case fields (see schemas/raw/).

The compiled decoder (producer/native.py) returns ``kis_native.Record`` instead: the same
attributes, read-only, with the typed values held in Rust and ``fields`` built on first
access (then cached); it compares equal to a `Record` with the same attributes, has the
same ``repr``, and ``isinstance(native_record, Record)`` is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_native_record_types: tuple[type, ...] = ()


class _RecordType(type):
    """Makes ``isinstance(x, Record)`` true of the compiled decoder's records as well."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return type.__instancecheck__(cls, obj) or (
            cls is Record and isinstance(obj, _native_record_types)
        )


def register_native_record_type(record_type: type) -> None:
    """Count ``kis_native.Record`` as a `Record` (called when a native decoder is built)."""
    global _native_record_types
    if record_type not in _native_record_types:
        _native_record_types = (*_native_record_types, record_type)


@dataclass(slots=True)
class Record(metaclass=_RecordType):
    tr_id: str
    venue: str
    symbol: str
    event_time: int | None
    """Exchange time as UTC epoch milliseconds (None when the record carries no time)."""
    received_at: int
    """When the frame was read off the socket, UTC epoch microseconds."""
    session: str
    """Which WebSocket connection delivered it (stable id per connection)."""
    seq: int
    """Per-connection frame sequence number (records of one frame share it)."""
    index: int
    """Position of this record within its frame (0-based)."""
    fields: dict[str, Any]
    """snake_case KIS name -> typed value, None where KIS sent nothing."""
    extra: list[str] | None = None
    """Fields past the catalogue's width (KIS appended something new), kept verbatim."""


@dataclass(slots=True)
class DecodeError:
    reason: str
    raw: str | bytes
    tr_id: str | None = None
    received_at: int = 0
    session: str = ""
    seq: int = 0
