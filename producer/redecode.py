"""`kis-stream redecode`: rebuild per-TR topics from `kis.frames` after a decoder fix.

It reads the raw frames (all partitions, from the beginning or a time range, up to the end
offsets seen at start), decodes them with today's catalogue and decoder, and publishes the
records and dead letters under a *target* topic prefix.

Duplicates: by default the target prefix differs from the live one (`kis.redecode.`), so
nothing already published is repeated; point the processors at the new topics, or copy
them over. Writing into the live topics (`--to-prefix kis.` with `--allow-duplicates`)
appends a second copy of every record already there; each record is uniquely identified
by (`session`, `seq`, `index`), identical in both copies, which is the key to deduplicate
on downstream.

Order: frames of one symbol share a partition of `kis.frames` (keyed by symbol), and a
session slot's subscribe acknowledgements share a partition with its encrypted frames, over
all its connections (keyed by slot), so per-symbol order and AES re-keying are preserved
partition by partition.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import click
import fastavro
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from kis_stream.logging import configure_logging, register_secrets
from kis_stream.settings import Settings, SettingsError, load_settings
from producer.catalogue import Catalogue, load_catalogue
from producer.codec import Codec, SchemaIds, TopicNames
from producer.frames import FrameDecoder
from producer.frames_topic import frames_schema_text
from producer.records import DecodeError
from producer.service import ensure_topics
from producer.system import SubscribeAck, parse_system

log = logging.getLogger(__name__)


class RedecodeStats:
    def __init__(self) -> None:
        self.frames = 0
        self.records = 0
        self.dead_letters = 0
        self.skipped = 0


def _decode_frame(value: bytes, schema: Any) -> dict[str, Any]:
    if len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent wire format")
    datum = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
    if not isinstance(datum, dict):
        raise ValueError("not a Frame record")
    return datum


def _micros(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1_000_000)
    return int(value)


def _ranges(consumer: Consumer, topic: str, since_ms: int | None) -> dict[int, tuple[int, int]]:
    """partition -> (first offset to read, end offset at start); empty ranges left out."""
    metadata = consumer.list_topics(topic, timeout=10)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise click.ClickException(f"topic {topic} does not exist")
    partitions = sorted(metadata.topics[topic].partitions)
    bounds = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
    }
    starts = {p: low for p, (low, _) in bounds.items()}
    if since_ms is not None:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
        )
        starts = {tp.partition: tp.offset if tp.offset >= 0 else bounds[tp.partition][1]
                  for tp in found}  # fmt: skip
    return {p: (starts[p], high) for p, (_, high) in bounds.items() if starts[p] < high}


def redecode(
    settings: Settings,
    *,
    to_prefix: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    catalogue: Catalogue | None = None,
) -> RedecodeStats:
    """Republish decoded records from the frames topic under `to_prefix`; returns counts."""
    catalogue = catalogue or load_catalogue()
    source = TopicNames(settings.topic_prefix)
    target = TopicNames(to_prefix)
    ensure_topics(settings, target, catalogue)
    codec = Codec(target, SchemaIds(settings.registry_config(), None), catalogue)
    codec.prepare(spec.tr_id for spec in catalogue)
    frame_schema = fastavro.parse_schema(json.loads(frames_schema_text()))
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"kis-redecode-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {
            **settings.kafka_client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.producer_compression,
            "linger.ms": settings.producer_linger_ms,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    stats = RedecodeStats()
    decoders: dict[str, FrameDecoder] = {}
    until_us = int(until.timestamp() * 1_000_000) if until else None
    since_ms = int(since.timestamp() * 1000) if since else None
    try:
        ranges = _ranges(consumer, source.frames, since_ms)
        consumer.assign(
            [TopicPartition(source.frames, p, first) for p, (first, _) in ranges.items()]
        )
        remaining = set(ranges)
        while remaining:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                partition, offset = msg.partition(), msg.offset()
                if partition not in remaining or offset is None:
                    continue
                end = ranges[partition][1]
                if offset >= end - 1:
                    remaining.discard(partition)
                if offset >= end:
                    continue
                _redecode_one(msg.value() or b"", frame_schema, decoders, codec, producer,
                              delivered, stats, until_us)  # fmt: skip
                producer.poll(0)
        producer.flush(60)
    finally:
        consumer.close()
    if failures:
        raise click.ClickException(f"{len(failures)} records were not delivered: {failures[0]}")
    return stats


def _redecode_one(
    value: bytes,
    frame_schema: Any,
    decoders: dict[str, FrameDecoder],
    codec: Codec,
    producer: Producer,
    delivered: Any,
    stats: RedecodeStats,
    until_us: int | None,
) -> None:
    try:
        frame = _decode_frame(value, frame_schema)
    except Exception:
        stats.skipped += 1
        return
    raw: bytes = frame["frame"]
    received_at = _micros(frame["received_at"])
    session: str = frame["session"]
    seq = int(frame["seq"])
    decoder = decoders.get(session)
    if decoder is None:
        decoder = decoders[session] = FrameDecoder(codec.catalogue)
    if raw[:1] == b"{":
        message = parse_system(raw)
        if isinstance(message, SubscribeAck) and message.key and message.iv:
            register_secrets([message.key, message.iv])
            decoder.set_key(message.tr_id, message.key, message.iv)
        return
    if until_us is not None and received_at > until_us:
        return
    stats.frames += 1
    result = decoder.decode(raw, received_at=received_at, session=session, seq=seq)
    timestamp = received_at // 1000
    if isinstance(result, DecodeError):
        stats.dead_letters += 1
        key = (result.tr_id or "").encode() or None
        producer.produce(codec.topics.dead_letter, codec.dead_letter(result), key,
                         timestamp=timestamp, on_delivery=delivered)  # fmt: skip
        return
    for record in result:
        topic, encoded = codec.record(record)
        producer.produce(topic, encoded, record.symbol.encode(), timestamp=timestamp,
                         on_delivery=delivered)  # fmt: skip
    stats.records += len(result)


def _parse_time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@click.command(name="redecode")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    help="YAML settings file (Kafka, registry, TOPIC_PREFIX of the frames to read).",
)  # fmt: skip
@click.option(
    "--to-prefix",
    default="kis.redecode.",
    show_default=True,
    help="Topic prefix to publish under (the live prefix needs --allow-duplicates).",
)
@click.option(
    "--since",
    help="Start at frames received at/after this ISO time (default: the beginning). "
    "Encrypted notices of connections opened before it lack their key and go to the "
    "dead-letter topic.",
)
@click.option("--until", help="Only frames received up to this ISO time.")
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Permit writing into the live topics (records already there are repeated).",
)
def redecode_command(
    config_file: Path | None,
    to_prefix: str,
    since: str | None,
    until: str | None,
    allow_duplicates: bool,
) -> None:
    """Rebuild the per-TR topics from kis.frames (after a decoder fix or a KIS field change)."""
    try:
        settings = load_settings(config_file)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if to_prefix == settings.topic_prefix and not allow_duplicates:
        raise click.ClickException(
            f"--to-prefix {to_prefix} is the live prefix: every record already published would "
            "be repeated; pass --allow-duplicates to do it anyway (dedup on session, seq, index)"
        )
    configure_logging(settings.log_level, settings.log_format)
    register_secrets(settings.secret_values())
    try:
        stats = redecode(
            settings, to_prefix=to_prefix, since=_parse_time(since), until=_parse_time(until)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"redecoded {stats.frames} frames: {stats.records} records, "
        f"{stats.dead_letters} dead letters, {stats.skipped} unreadable, under {to_prefix}"
    )
