"""The raw and dead-letter schemas against the real schema registry (Apicurio, ccompat API).

Registers every schema under its TopicNameStrategy subject, then checks BACKWARD
compatibility the way a KIS field addition will meet it in production: the schema of each
TR minus its ``since`` fields (what was registered before KIS appended them) is the previous
version, and the current schema must be accepted after it; a breaking change must not.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from kis_stream.topics import DEAD_LETTER, subject
from producer.avro import (
    RawEncoder,
    decode_confluent,
    raw_schema,
    register_dead_letter_schema,
    register_raw_schemas,
)
from producer.catalogue import load_catalogue
from producer.records import Record

pytestmark = pytest.mark.kafka

CATALOGUE = load_catalogue()


@pytest.fixture(scope="module")
def registry(services: Any) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": services.registry_url})


def _schema(doc: dict[str, Any]) -> Any:
    from confluent_kafka.schema_registry import Schema

    return Schema(json.dumps(doc, ensure_ascii=False), "AVRO")


def test_register_every_raw_schema_and_dead_letter(registry: Any) -> None:
    ids = register_raw_schemas(registry)
    assert set(ids) == {spec.tr_id for spec in CATALOGUE}
    assert len(set(ids.values())) == len(ids)  # one distinct schema per TR
    assert register_raw_schemas(registry) == ids  # idempotent
    for spec in CATALOGUE:
        latest = registry.get_latest_version(subject(spec.topic))
        assert latest.schema_id == ids[spec.tr_id]
        assert json.loads(latest.schema.schema_str)["name"] == spec.tr_id
    dead_id = register_dead_letter_schema(registry)
    assert registry.get_latest_version(subject(DEAD_LETTER)).schema_id == dead_id

    # A record encoded with the registered id reads back with the registry's schema.
    spec = CATALOGUE["H0STPGM0"]
    record = Record(
        "H0STPGM0", "KRX", "005930", 1, 2, "s", 3, 0, {f.column: None for f in spec.fields}
    )
    data = RawEncoder(ids).encode(record)
    registered = json.loads(registry.get_schema(ids["H0STPGM0"]).schema_str)
    assert decode_confluent(data, registered)[0] == ids["H0STPGM0"]


@pytest.mark.parametrize("tr_id", ["H0STCNT0", "H0STASP0"])
def test_adding_a_kis_field_is_backward_compatible(registry: Any, tr_id: str) -> None:
    spec = CATALOGUE[tr_id]
    current = raw_schema(spec)
    since = {f.column for f in spec.fields if f.since}
    assert since, "the TR should have fields KIS appended later"
    previous = copy.deepcopy(current)
    previous["fields"] = [f for f in previous["fields"] if f["name"] not in since]

    name = f"test.{uuid.uuid4().hex[:10]}.{spec.topic}-value"
    registry.register_schema(name, _schema(previous))
    registry.set_compatibility(subject_name=name, level="BACKWARD")
    assert registry.test_compatibility(name, _schema(current)) is True
    second = registry.register_schema(name, _schema(current))
    assert registry.get_latest_version(name).schema_id == second
    assert [v for v in registry.get_versions(name)] == [1, 2]


def test_breaking_change_is_rejected(registry: Any) -> None:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    spec = CATALOGUE["H0STPGM0"]
    current = raw_schema(spec)
    name = f"test.{uuid.uuid4().hex[:10]}.{spec.topic}-value"
    registry.register_schema(name, _schema(current))
    registry.set_compatibility(subject_name=name, level="BACKWARD")

    retyped = copy.deepcopy(current)  # a long field turned into a required string
    for field in retyped["fields"]:
        if field["name"] == "ntby_cnqn":
            field.pop("default")
            field["type"] = "string"
    required = copy.deepcopy(current)  # a new field without a default
    required["fields"].append({"name": "new_required", "type": "long"})
    for broken in (retyped, required):
        assert registry.test_compatibility(name, _schema(broken)) is False
        with pytest.raises(SchemaRegistryError):
            registry.register_schema(name, _schema(broken))
    assert registry.get_versions(name) == [1]
