"""Confluent wire-format Avro for the processors: magic byte 0, 4-byte schema id, Avro body.

Decoding looks the writer schema up in the registry by id (once per id, then cached) and
reads it with Avro logical types removed, so timestamps, times and dates come out as the
plain ints of the raw-record contract (epoch ms/us, ms since midnight, days since epoch)
with no datetime objects to build and convert back. Encoding registers the output schema
under `<topic>-value` (once) and writes ints as they are.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from faust.serializers import codecs

from processors.flat_avro import (
    FlatWriter,
    compile_reader,
    compile_values_reader,
    native_flat,
    native_reader,
)

MAGIC = 0
_HEADER = struct.Struct(">bI")
_SCHEMA_ID = struct.Struct(">I")


class WireError(ValueError):
    """Bytes that are not a decodable Confluent wire-format Avro value."""


def strip_logical_types(schema: Any) -> Any:
    """A copy of an Avro schema (parsed JSON) without `logicalType` annotations."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    return schema


def registry_client(url: str) -> SchemaRegistryClient:
    """A registry client; `mock://` gives confluent-kafka's in-memory registry (tests)."""
    return SchemaRegistryClient.new_client({"url": url})


def truncate_fields(schema: Any, needed: frozenset[str] | None) -> Any:
    """A record schema cut after the last of the `needed` fields.

    Avro writes fields in order with no framing, so a reader can stop after the last field
    it needs: the trailing bytes are simply not read (a third of a book record).
    """
    if needed is None or not isinstance(schema, dict) or schema.get("type") != "record":
        return schema
    fields = schema["fields"]
    last = max((i for i, f in enumerate(fields) if f["name"] in needed), default=len(fields) - 1)
    return {**schema, "fields": fields[: last + 1]}


class AvroDecoder:
    """Decodes values written with any schema the registry knows (raw TR topics).

    With `needed`, only the fields up to the last needed one are read (see
    `truncate_fields`): the record then lacks the later fields. With `columns`, `values`
    gives just those fields' values as a tuple, in that order (None for a field the writer
    schema lacks), reading up to the last of them. Flat schemas (every raw TR) are read by
    kis_native's compiled reader when it is built, else by generated Python
    (processors/flat_avro.py); both give the same values.
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        needed: frozenset[str] | None = None,
        columns: tuple[str, ...] | None = None,
    ) -> None:
        self.client = client
        self.columns = columns
        self.needed = frozenset(columns) if needed is None and columns is not None else needed
        self._schemas: dict[int, Any] = {}
        self._readers: dict[int, Callable[[bytes, int], dict[str, Any]]] = {}
        self._values_readers: dict[int, Callable[[bytes, int], tuple[Any, ...]]] = {}

    def schema(self, schema_id: int) -> Any:
        parsed = self._schemas.get(schema_id)
        if parsed is None:
            try:
                text = self.client.get_schema(schema_id).schema_str
            except Exception as exc:  # the registry's errors are not one class
                raise WireError(f"schema id {schema_id} not found in the registry: {exc}") from exc
            assert text is not None
            plain = truncate_fields(strip_logical_types(json.loads(text)), self.needed)
            parsed = fastavro.parse_schema(plain)
            self._schemas[schema_id] = parsed
            self._compile(schema_id, plain)
        return parsed

    def _compile(self, schema_id: int, plain: Any) -> None:
        """The specialised readers of a flat record schema (every raw TR); none otherwise."""
        native = native_reader(plain)
        reader = native.read_dict if native is not None else compile_reader(plain)
        if reader is not None:
            self._readers[schema_id] = reader
        if self.columns is not None:
            native = native_reader(plain, self.columns)
            values = (
                native.read if native is not None else compile_values_reader(plain, self.columns)
            )
            if values is not None:
                self._values_readers[schema_id] = values

    def _fastavro(self, data: bytes, schema_id: int) -> Any:
        stream = io.BytesIO(data)
        stream.seek(_HEADER.size)
        return fastavro.schemaless_reader(stream, self.schema(schema_id), None)

    @staticmethod
    def _schema_id(data: bytes | None) -> int:
        if not data or len(data) < _HEADER.size:
            raise WireError("value too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireError(f"unknown magic byte {magic}")
        return int(schema_id)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        schema_id = self._schema_id(data)
        assert data is not None
        reader = self._readers.get(schema_id)
        try:
            if reader is not None:
                record = reader(data, _HEADER.size)
            else:
                record = self._fastavro(data, schema_id)  # also compiles the reader
        except WireError:
            raise
        except Exception as exc:  # truncated or foreign bytes: the readers raise many types
            raise WireError(f"undecodable Avro body: {exc}") from exc
        if not isinstance(record, dict):
            raise WireError("Avro value is not a record")
        return record

    def values(self, data: bytes | None) -> tuple[Any, ...]:
        """The values of `columns` (given at construction), in that order."""
        columns = self.columns
        if columns is None:
            raise TypeError("values() needs the decoder's columns")
        if data and len(data) >= _HEADER.size and data[0] == MAGIC:  # (the usual case, inline)
            reader = self._values_readers.get(_SCHEMA_ID.unpack_from(data, 1)[0])
            if reader is not None:
                try:
                    return reader(data, _HEADER.size)
                except Exception as exc:  # truncated or foreign bytes
                    raise WireError(f"undecodable Avro body: {exc}") from exc
        schema_id = self._schema_id(data)
        assert data is not None
        reader = self._values_readers.get(schema_id)
        if reader is not None:
            try:
                return reader(data, _HEADER.size)
            except Exception as exc:  # truncated or foreign bytes
                raise WireError(f"undecodable Avro body: {exc}") from exc
        record = self.decode(data)  # (not a flat schema, or its first value: compiles)
        return tuple(map(record.get, columns))


class AvroEncoder:
    """Encodes one subject's records; the schema is registered on first use."""

    def __init__(self, client: SchemaRegistryClient, subject: str, schema: Mapping[str, Any]):
        self.client = client
        self.subject = subject
        self.schema = dict(schema)
        plain = strip_logical_types(self.schema)
        self._parsed = fastavro.parse_schema(plain)
        self._flat = FlatWriter.compile(plain)
        self._header: bytes | None = None
        self._native: Any = None
        """kis_native's encoder of the schema (once registered), when it takes the schema."""

    def register(self) -> int:
        """Register (idempotent in the registry) and return the schema id."""
        schema_id = self.client.register_schema(
            self.subject, Schema(json.dumps(self.schema), "AVRO")
        )
        self._header = _HEADER.pack(MAGIC, schema_id)
        self._native = native_encoder(self._flat, self._header)
        return schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        native = self._native
        if native is not None:
            try:
                data: bytes = native.encode(record)
            except (TypeError, KeyError, AttributeError, ValueError) as exc:
                raise ValueError(f"record does not fit {self.subject}: {exc}") from exc
            return data
        if self._header is None:
            self.register()
            return self.encode(record)
        assert self._header is not None
        if self._flat is not None:
            buffer = bytearray(self._header)
            try:
                self._flat.write(buffer, record)
            except (TypeError, KeyError, AttributeError, struct.error) as exc:
                raise ValueError(f"record does not fit {self.subject}: {exc}") from exc
            return bytes(buffer)
        out = io.BytesIO()
        out.write(self._header)
        fastavro.schemaless_writer(out, self._parsed, record)
        return out.getvalue()


_NATIVE_WRITE_KINDS = {
    "long": "long",
    "int": "long",
    "double": "double",
    "string": "string",
    "boolean": "boolean",
}


def native_encoder(flat: FlatWriter | None, header: bytes) -> Any:
    """kis_native's encoder for a flat schema's writer (same bytes), or None.

    None when the extension is not in use or the schema has a type it does not write (a
    build older than its booleans refuses them); the generated Python writer is used then.
    """
    module = native_flat()
    if module is None or flat is None:
        return None
    fields = []
    for name, base, nullable in flat.kinds:
        kind = _NATIVE_WRITE_KINDS.get(base)
        if kind is None:
            return None
        fields.append((name, kind, nullable, False))
    try:
        return module.Encoder(header, fields, False)
    except ValueError:  # "unsupported field kind"
        return None


class FaustAvro(codecs.Codec):
    """A Faust codec over an encoder (values out) and a decoder (values in)."""

    def __init__(self, encoder: AvroEncoder | None, decoder: AvroDecoder | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def _dumps(self, obj: Any) -> bytes:
        if self.encoder is None:
            raise TypeError("this codec only decodes")
        return self.encoder.encode(obj)

    def _loads(self, s: bytes) -> Any:
        if self.decoder is None:
            raise TypeError("this codec only encodes")
        return self.decoder.decode(s)


def load_schema(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        schema = json.load(fh)
    assert isinstance(schema, dict)
    return schema
