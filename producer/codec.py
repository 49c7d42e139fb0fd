"""Topic names, schema registration and the Confluent wire format for everything produced.

Subjects follow TopicNameStrategy (`<topic>-value`). Registered ids are cached on disk
(beside the spool), so a producer restarted while the registry is briefly down can still
encode with the ids it registered before.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from kis_stream.topics import marks_topic, raw_topic, subject
from producer.avro import (
    ConfluentEncoder,
    compile_wire_encoder,
    confluent_header,
    dead_letter_to_avro,
    load_dead_letter_schema,
    load_raw_schema,
)
from producer.catalogue import Catalogue
from producer.frames_topic import encode_frame, frames_schema_text
from producer.marks import mark_schema_text
from producer.records import DecodeError, Record
from producer.status import StatusEvent, encode_status, status_schema_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = "kis."

    @property
    def frames(self) -> str:
        return self.prefix + "frames"

    @property
    def dead_letter(self) -> str:
        return self.prefix + "dead-letter"

    @property
    def status(self) -> str:
        return self.prefix + "status"

    @property
    def marks(self) -> str:
        return marks_topic(self.prefix)

    def raw(self, tr_id: str) -> str:
        return raw_topic(tr_id, self.prefix)


class SchemaIds:
    """subject -> registered schema id, remembered on disk per (subject, schema text)."""

    def __init__(self, registry_config: dict[str, Any], cache_path: Path | None) -> None:
        self._client = SchemaRegistryClient(registry_config)
        self._cache_path = cache_path
        self._cache: dict[str, int] = {}
        if cache_path is not None and cache_path.exists():
            try:
                self._cache = {
                    str(k): int(v) for k, v in json.loads(cache_path.read_text()).items()
                }
            except (OSError, ValueError, AttributeError):
                self._cache = {}

    def register(self, subject_name: str, schema_text: str) -> int:
        fingerprint = hashlib.sha256(schema_text.encode()).hexdigest()[:16]
        cache_key = f"{subject_name}@{fingerprint}"
        try:
            schema_id = int(self._client.register_schema(subject_name, Schema(schema_text, "AVRO")))
        except Exception as exc:
            cached = self._cache.get(cache_key)
            if cached is None:
                raise
            log.warning(
                "schema registry unreachable: using the cached schema id",
                extra={"subject": subject_name, "error": str(exc)[:200]},
            )
            return cached
        if self._cache.get(cache_key) != schema_id:
            self._cache[cache_key] = schema_id
            self._save()
        return schema_id

    def _save(self) -> None:
        if self._cache_path is None:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._cache, indent=1, sort_keys=True))
        tmp.replace(self._cache_path)


class Codec:
    """Encodes what the producer publishes; `prepare` registers every schema up front."""

    def __init__(self, topics: TopicNames, schema_ids: SchemaIds, catalogue: Catalogue) -> None:
        self.topics = topics
        self._ids = schema_ids
        self.catalogue = catalogue
        self._raw: dict[str, tuple[str, Callable[[Record], bytes]]] = {}
        self._frames_header = b""
        self._status_header = b""
        self.mark_header = b""
        """Confluent header of the receive marks (producer/marks.py), set by `prepare`."""
        self._dead_letter: ConfluentEncoder | None = None

    def prepare(self, tr_ids: Iterable[str]) -> None:
        frames_id = self._ids.register(subject(self.topics.frames), frames_schema_text())
        status_id = self._ids.register(subject(self.topics.status), status_schema_text())
        self._frames_header, self._status_header = (
            confluent_header(frames_id),
            confluent_header(status_id),
        )
        marks_id = self._ids.register(subject(self.topics.marks), mark_schema_text())
        self.mark_header = confluent_header(marks_id)
        schema = load_dead_letter_schema()
        dead_id = self._ids.register(subject(self.topics.dead_letter), _text(schema))
        self._dead_letter = ConfluentEncoder(schema, dead_id)
        for tr_id in tr_ids:
            spec = self.catalogue.get(tr_id)
            if spec is None or spec.tr_id in self._raw:
                continue
            topic = self.topics.raw(spec.tr_id)
            schema = load_raw_schema(spec.tr_id)
            header = confluent_header(self._ids.register(subject(topic), _text(schema)))
            encode = compile_wire_encoder(schema, header, from_record=True)
            for alias in spec.tr_ids:
                self._raw[alias] = (topic, encode)

    def frame(
        self, raw: bytes, received_at: int, session: str, seq: int, tr_id: str | None
    ) -> bytes:
        return self._frames_header + encode_frame(raw, received_at, session, seq, tr_id)

    def status(self, event: StatusEvent) -> bytes:
        return self._status_header + encode_status(event)

    def record(self, record: Record) -> tuple[str, bytes]:
        """(topic, value) of a decoded record; paper tr_ids go to their real TR's topic."""
        entry = self._raw.get(record.tr_id)
        if entry is None:
            self.prepare([record.tr_id])  # a TR outside the plan (rare): register on first use
            entry = self._raw[record.tr_id]
        topic, encode = entry
        return topic, encode(record)

    def dead_letter(self, error: DecodeError) -> bytes:
        assert self._dead_letter is not None, "prepare() first"
        return self._dead_letter.encode(dead_letter_to_avro(error))


def _text(schema: dict[str, object]) -> str:
    return json.dumps(schema, ensure_ascii=False)
