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

from processors.flat_avro import AvroBodyError, FlatWriter, compile_reader

MAGIC = 0
_HEADER = struct.Struct(">bI")


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
    `truncate_fields`): the record then lacks the later fields.
    """

    def __init__(self, client: SchemaRegistryClient, needed: frozenset[str] | None = None) -> None:
        self.client = client
        self.needed = needed
        self._schemas: dict[int, Any] = {}
        self._readers: dict[int, Callable[[bytes, int], dict[str, Any]]] = {}

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
            reader = compile_reader(plain)
            if reader is not None:  # flat records (every raw TR): the specialised reader
                self._readers[schema_id] = reader
        return parsed

    def _fastavro(self, data: bytes, schema_id: int) -> Any:
        stream = io.BytesIO(data)
        stream.seek(_HEADER.size)
        return fastavro.schemaless_reader(stream, self.schema(schema_id), None)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if not data or len(data) < _HEADER.size:
            raise WireError("value too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireError(f"unknown magic byte {magic}")
        reader = self._readers.get(schema_id)
        try:
            if reader is not None:
                record = reader(data, _HEADER.size)
            else:
                record = self._fastavro(data, schema_id)  # also compiles the reader
        except WireError:
            raise
        except (AvroBodyError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise WireError(f"undecodable Avro body: {exc}") from exc
        except Exception as exc:  # truncated or foreign bytes: fastavro raises many types
            raise WireError(f"undecodable Avro body: {exc}") from exc
        if not isinstance(record, dict):
            raise WireError("Avro value is not a record")
        return record


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

    def register(self) -> int:
        """Register (idempotent in the registry) and return the schema id."""
        schema_id = self.client.register_schema(
            self.subject, Schema(json.dumps(self.schema), "AVRO")
        )
        self._header = _HEADER.pack(MAGIC, schema_id)
        return schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        if self._header is None:
            self.register()
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
