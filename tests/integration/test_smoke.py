"""Smoke test through the real parts: registry, broker, and both Kafka client stacks.

Records go in with confluent-kafka's AvroSerializer (Confluent wire format, schema registered
under `<topic>-value`) and come back out through confluent-kafka's AvroDeserializer and
through aiokafka (what Faust runs on) decoded by hand with fastavro, field for field.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import urllib.request
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from kis_stream.services import LocalServices

pytestmark = pytest.mark.kafka

UTC = dt.UTC
PARTITIONS = 3

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "SmokeTick",
    "namespace": "kis.test",
    "fields": [
        {"name": "symbol", "type": "string"},
        {"name": "seq", "type": "long"},
        {"name": "price", "type": "double"},
        {"name": "volume", "type": ["null", "long"], "default": None},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "trade_time", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "business_date", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "quote_time",
            "type": ["null", {"type": "int", "logicalType": "time-millis"}],
            "default": None,
        },
        {"name": "extra_fields", "type": ["null", {"type": "array", "items": "string"}]},
    ],
}

RECORDS: list[dict[str, Any]] = [
    {
        "symbol": "005930",
        "seq": 0,
        "price": 71_500.0,
        "volume": 9_223_372_036_854_775_807,  # the largest long survives
        "note": "삼성전자 보통주 — 체결 ✓ 📈",
        "event_time": dt.datetime(2025, 3, 4, 0, 30, 1, 123_000, tzinfo=UTC),
        "received_at": dt.datetime(2025, 3, 4, 0, 30, 1, 123_456, tzinfo=UTC),
        "trade_time": dt.time(9, 30, 1, 123_000),
        "business_date": dt.date(2025, 3, 4),
        "quote_time": dt.time(15, 30),
        "extra_fields": ["미정의", ""],
    },
    {
        "symbol": "000660",
        "seq": 1,
        "price": -0.000_123_456_789,
        "volume": None,
        "note": None,
        "event_time": dt.datetime(1999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        "received_at": dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "trade_time": dt.time(0, 0),
        "business_date": dt.date(1970, 1, 1),
        "quote_time": None,
        "extra_fields": None,
    },
    {
        "symbol": "035720",
        "seq": 2,
        "price": 1.7976931348623157e308,
        "volume": -1,
        "note": "",
        "event_time": dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        "received_at": dt.datetime(2038, 1, 19, 3, 14, 8, 999_999, tzinfo=UTC),
        "trade_time": dt.time(23, 59, 59, 999_000),
        "business_date": dt.date(2100, 2, 28),
        "quote_time": dt.time(8, 0, 0, 1_000),
        "extra_fields": [],
    },
]


def _by_seq(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: int(row["seq"]))


@pytest.fixture(scope="module")
def registry(services: LocalServices) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": services.registry_url, "timeout": 10})


@pytest.fixture(scope="module")
def produced(
    services: LocalServices,
    registry: SchemaRegistryClient,
    topic_factory: Callable[..., str],
) -> tuple[str, int]:
    """The topic the records were produced to, and the id of the schema they carry."""
    topic = topic_factory(partitions=PARTITIONS, prefix="smoke")
    serialize = AvroSerializer(registry, json.dumps(SCHEMA))
    producer = Producer({"bootstrap.servers": services.bootstrap, "enable.idempotence": True})
    reports: list[tuple[KafkaError | None, Message]] = []
    for record in RECORDS:
        value = serialize(record, SerializationContext(topic, MessageField.VALUE))
        producer.produce(
            topic,
            key=record["symbol"].encode(),
            value=value,
            on_delivery=lambda err, msg: reports.append((err, msg)),
        )
    assert producer.flush(30) == 0
    assert [err for err, _ in reports] == [None] * len(RECORDS)
    schema_id = registry.get_latest_version(f"{topic}-value").schema_id
    assert isinstance(schema_id, int)
    return topic, schema_id


def test_schema_is_registered_under_the_topic_name_strategy(
    registry: SchemaRegistryClient, produced: tuple[str, int]
) -> None:
    topic, schema_id = produced
    assert f"{topic}-value" in registry.get_subjects()
    schema_str = registry.get_schema(schema_id).schema_str
    assert schema_str is not None
    stored = json.loads(schema_str)
    assert [f["name"] for f in stored["fields"]] == [f["name"] for f in SCHEMA["fields"]]


def test_confluent_consumer_round_trips_every_field(
    services: LocalServices, registry: SchemaRegistryClient, produced: tuple[str, int]
) -> None:
    topic, schema_id = produced
    deserialize = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": services.bootstrap,
            "group.id": "smoke-ck",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([CkTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    rows: list[dict[str, Any]] = []
    keys: dict[int, str] = {}
    try:
        for _ in range(60):
            if len(rows) == len(RECORDS):
                break
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value, key = msg.value(), msg.key()
            assert value is not None and key is not None
            assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == schema_id
            row = deserialize(value, SerializationContext(topic, MessageField.VALUE))
            assert isinstance(row, dict)
            rows.append(row)
            keys[int(row["seq"])] = key.decode()
    finally:
        consumer.close()
    assert _by_seq(rows) == RECORDS
    assert keys == {r["seq"]: r["symbol"] for r in RECORDS}


def _schema_by_id(registry_url: str, schema_id: int) -> Any:
    with urllib.request.urlopen(f"{registry_url}/schemas/ids/{schema_id}", timeout=10) as resp:
        return fastavro.parse_schema(json.loads(json.loads(resp.read())["schema"]))


def _decode_wire(registry_url: str, value: bytes, cache: dict[int, Any]) -> dict[str, Any]:
    """Confluent wire format by hand: magic 0, big-endian schema id, Avro binary body."""
    assert value[0] == 0, "Confluent magic byte"
    (schema_id,) = struct.unpack(">I", value[1:5])
    if schema_id not in cache:
        cache[schema_id] = _schema_by_id(registry_url, schema_id)
    row = fastavro.schemaless_reader(io.BytesIO(value[5:]), cache[schema_id], None)
    assert isinstance(row, dict)
    return row


async def test_aiokafka_consumer_round_trips_every_field(
    services: LocalServices, produced: tuple[str, int]
) -> None:
    topic, _ = produced
    consumer = AIOKafkaConsumer(bootstrap_servers=services.bootstrap, enable_auto_commit=False)
    await consumer.start()
    rows: list[dict[str, Any]] = []
    schemas: dict[int, Any] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        for _ in range(30):
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                for msg in messages:
                    assert msg.value is not None and msg.key is not None
                    row = _decode_wire(services.registry_url, msg.value, schemas)
                    assert msg.key.decode() == row["symbol"]
                    rows.append(row)
            if len(rows) >= len(RECORDS):
                break
    finally:
        await consumer.stop()
    assert _by_seq(rows) == RECORDS


def test_registry_enforces_backward_compatibility(
    registry: SchemaRegistryClient, topic_factory: Callable[..., str]
) -> None:
    subject = f"{topic_factory(prefix='compat')}-value"
    assert registry.get_compatibility() == "BACKWARD"
    base = {"type": "record", "name": "C", "fields": [{"name": "a", "type": "long"}]}
    registry.register_schema(subject, Schema(json.dumps(base), "AVRO"))

    required_added = {**base, "fields": [*base["fields"], {"name": "b", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as rejected:
        registry.register_schema(subject, Schema(json.dumps(required_added), "AVRO"))
    assert rejected.value.http_status_code == 409

    optional = {"name": "b", "type": ["null", "string"], "default": None}
    optional_added = {**base, "fields": [*base["fields"], optional]}
    registry.register_schema(subject, Schema(json.dumps(optional_added), "AVRO"))
    assert registry.get_versions(subject) == [1, 2]
