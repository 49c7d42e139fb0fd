"""`kis-stream tail TOPIC`: read any kis-stream topic and print its records, decoded.

The first tool a downstream engineer runs: it needs nothing but the broker and the registry
addresses, decodes the Confluent wire format through the registry (any schema id, so it
works on every raw, derived, status and dead-letter topic), and renders Avro logical types
readably (instants as ISO 8601, times of day and dates as ISO strings). It never commits
offsets: partitions are assigned directly, so tailing leaves no consumer group behind.

Addresses come from --bootstrap/--registry, else KAFKA_BOOTSTRAP/SCHEMA_REGISTRY_URL, else
`.local/services.env` (written by `make services-up`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

SERVICES_ENV = Path(".local") / "services.env"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WIRE_MAGIC = 0
KST = dt.timezone(dt.timedelta(hours=9), "KST")

# Environment names shared with the producer's settings (kis_stream/settings.py).
KAFKA_ENV_CONFIG = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}


class TailError(click.ClickException):
    """A condition the user can fix (address, topic name), reported without a traceback."""


# --- where the broker and the registry are ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoints:
    bootstrap: str
    registry: str | None
    source: str
    """Where the addresses came from, for error messages."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments, blanks, `export` and quotes tolerated)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def services_env_candidates(cwd: Path | None = None) -> list[Path]:
    """`.local/services.env` in the working directory, then in the project checkout."""
    cwd = cwd or Path.cwd()
    return list(dict.fromkeys([cwd / SERVICES_ENV, PROJECT_ROOT / SERVICES_ENV]))


def resolve_endpoints(
    bootstrap: str | None,
    registry: str | None,
    env: Mapping[str, str],
    candidates: Sequence[Path],
) -> Endpoints:
    """Options win, then the environment, then the first services.env that exists."""
    source = "--bootstrap" if bootstrap else "KAFKA_BOOTSTRAP"
    bootstrap = bootstrap or env.get("KAFKA_BOOTSTRAP") or None
    registry = registry or env.get("SCHEMA_REGISTRY_URL") or None
    if bootstrap is None or registry is None:
        for path in candidates:
            if path.is_file():
                values = read_env_file(path)
                if bootstrap is None and values.get("KAFKA_BOOTSTRAP"):
                    bootstrap, source = values["KAFKA_BOOTSTRAP"], str(path)
                if registry is None and values.get("SCHEMA_REGISTRY_URL"):
                    registry = values["SCHEMA_REGISTRY_URL"]
                break
    if not bootstrap:
        raise TailError(
            "no Kafka address: pass --bootstrap HOST:PORT, set KAFKA_BOOTSTRAP, "
            "or start the local services with `make services-up`"
        )
    return Endpoints(bootstrap, registry.rstrip("/") if registry else None, source)


def kafka_config(bootstrap: str, env: Mapping[str, str], extra: Sequence[str]) -> dict[str, Any]:
    """librdkafka settings: a throwaway group that never commits, plus SASL/SSL and -X."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"kis-stream-tail-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
    }
    config.update({prop: env[name] for name, prop in KAFKA_ENV_CONFIG.items() if env.get(name)})
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TailError(f"-X expects PROPERTY=VALUE, got {item!r}")
        config[key.strip()] = value
    return config


# --- decoding ----------------------------------------------------------------------------


class RegistryUnavailable(TailError):
    pass


class WireDecoder:
    """Confluent wire format (magic 0, 4-byte schema id, Avro body) through the registry.

    Writer schemas are fetched once per id. Payloads that are not in the wire format are
    shown as text (or base64 when they are not UTF-8), so nothing is hidden from the user.
    """

    def __init__(self, fetch_schema: Callable[[int], str] | None) -> None:
        self._fetch_schema = fetch_schema
        self._schemas: dict[int, Any] = {}

    def decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if len(data) > 5 and data[0] == WIRE_MAGIC:
            schema_id = int.from_bytes(data[1:5], "big")
            if self._fetch_schema is None:  # --raw: say what it is without decoding it
                return {"schema_id": schema_id, "avro_base64": _b64(data[5:])}
            import fastavro

            parsed = self._schemas.get(schema_id)
            if parsed is None:
                parsed = fastavro.parse_schema(orjson.loads(self._fetch_schema(schema_id)))
                self._schemas[schema_id] = parsed
            return fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, None)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": _b64(data)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def registry_fetcher(url: str, env: Mapping[str, str], timeout: float) -> Callable[[int], str]:
    """A schema-by-id lookup, checked once up front so a wrong URL fails immediately."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {"url": url, "timeout": timeout, "max.retries": 1}
    if env.get("SCHEMA_REGISTRY_BASIC_AUTH"):
        conf["basic.auth.user.info"] = env["SCHEMA_REGISTRY_BASIC_AUTH"]
    client = SchemaRegistryClient(conf)
    try:
        client.get_subjects()
    except Exception as exc:
        raise RegistryUnavailable(
            f"cannot reach the schema registry at {url}: {_short(exc)} "
            "(check SCHEMA_REGISTRY_URL / --registry, or use --raw to skip decoding)"
        ) from None

    def fetch(schema_id: int) -> str:
        return str(client.get_schema(schema_id).schema_str)

    return fetch


def to_jsonable(value: Any, tz: dt.tzinfo = dt.UTC, *, bytes_as_text: bool = True) -> Any:
    """Avro values as JSON: instants in ISO 8601 (in `tz`), times and dates ISO.

    Avro `bytes` (the raw frames of kis.frames and kis.dead-letter) print as text when they
    are UTF-8, which KIS frames almost always are, else as `{"base64": ...}`; with
    `bytes_as_text=False` always as a base64 string.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, tz, bytes_as_text=bytes_as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, tz, bytes_as_text=bytes_as_text) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(tz).isoformat(timespec=_timespec(value))
    if isinstance(value, dt.time):
        return value.isoformat(timespec=_timespec(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        if not bytes_as_text:
            return _b64(bytes(value))
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": _b64(bytes(value))}
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _timespec(value: dt.datetime | dt.time) -> str:
    if value.microsecond == 0:
        return "seconds"
    return "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"


def select_fields(value: Any, fields: Sequence[str]) -> Any:
    if not fields or not isinstance(value, dict):
        return value
    return {name: value.get(name) for name in fields}


# --- the command ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    partition: int
    offset: int
    timestamp: dt.datetime | None
    key: Any
    value: Any

    def as_dict(self, meta: bool) -> Any:
        if not meta:
            return self.value
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
            "value": self.value,
        }


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _quiet_librdkafka() -> logging.Logger:
    """librdkafka's own connection chatter would bury the one clear message we print."""
    logger = logging.getLogger("kis_stream.tail.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _topic_partitions(consumer: Any, topic: str, endpoints: Endpoints, timeout: float) -> list[int]:
    from confluent_kafka import KafkaException

    bootstrap = endpoints.bootstrap
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TailError(
            f"cannot reach Kafka at {bootstrap} (from {endpoints.source}) within {timeout:g}s "
            f"({_short(exc)}); check KAFKA_BOOTSTRAP / --bootstrap"
        ) from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        names = sorted(t for t in metadata.topics if not t.startswith("_"))
        hint = ", ".join(n for n in names if n.startswith("kis.")) or ", ".join(names[:20])
        raise TailError(
            f"topic {topic!r} does not exist on {bootstrap}"
            + (f"; topics there: {hint}" if hint else "; the broker has no topics yet")
        )
    return sorted(found.partitions)


def _start_offsets(
    consumer: Any, topic: str, partitions: Sequence[int], start: str, last: int | None
) -> list[Any]:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    assignment = []
    for partition in partitions:
        if last is not None:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10.0)
            offset = max(low, high - last)
        else:
            offset = OFFSET_BEGINNING if start == "beginning" else OFFSET_END
        assignment.append(TopicPartition(topic, partition, offset))
    return assignment


def consume(
    consumer: Any,
    decoder: WireDecoder,
    *,
    max_records: int | None,
    idle_timeout: float | None,
    poll_interval: float = 0.5,
) -> Iterator[Output | str | None]:
    """Decoded records, an error line for a record that cannot be decoded, or None when a
    poll came back empty (a moment to flush buffered output). Never raises on bad data."""
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

    seen = 0
    last_activity = time.monotonic()
    while max_records is None or seen < max_records:
        message = consumer.poll(poll_interval)
        if message is None:
            if idle_timeout is not None and time.monotonic() - last_activity >= idle_timeout:
                return
            yield None
            continue
        last_activity = time.monotonic()
        if message.error() is not None:
            yield f"kafka error: {message.error()}"
            continue
        seen += 1
        position = f"partition {message.partition()} offset {message.offset()}"
        try:
            key = decoder.decode(message.key())
            value = decoder.decode(message.value())
        except Exception as exc:
            yield f"cannot decode {position}: {_short(exc)}"
            continue
        ts_type, ts_ms = message.timestamp()
        timestamp = (
            None
            if ts_type == TIMESTAMP_NOT_AVAILABLE
            else dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        )
        yield Output(message.topic(), message.partition(), message.offset(), timestamp, key, value)


class TablePrinter:
    """Rows printed as rich tables, one table per burst of records (a stream has no end)."""

    def __init__(self, fields: Sequence[str], batch: int = 20) -> None:
        from rich.console import Console

        self.console = Console()
        if not self.console.is_terminal:  # piped: no terminal width to fit, keep rows whole
            self.console = Console(width=1000)
        self.fields = list(fields)
        self.batch = batch
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        if not self.fields:
            self.fields = list(row)
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        from rich.table import Table

        if not self.rows:
            return
        table = Table(show_lines=False, header_style="bold")
        for name in self.fields:
            table.add_column(name, overflow="fold")
        for row in self.rows:
            table.add_row(*(_cell(row.get(name)) for name in self.fields))
        self.console.print(table)
        self.rows.clear()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _flatten_meta(row: Any) -> dict[str, Any]:
    """--meta rows for the table: position columns first, then the value's fields."""
    value = row["value"]
    flat = {k: row[k] for k in ("partition", "offset", "timestamp", "key")}
    if isinstance(value, dict):
        flat.update(value)
    else:
        flat["value"] = value
    return flat


def _timezone(name: str) -> dt.tzinfo:
    upper = name.upper()
    if upper == "UTC":
        return dt.UTC
    if upper in ("KST", "ASIA/SEOUL"):
        return KST  # Korea has no daylight saving time
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        raise click.BadParameter(f"unknown time zone {name!r} (UTC, KST or an IANA name)") from None


@click.command("tail")
@click.argument("topic")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP).")
@click.option("--registry", help="Schema registry base URL (default: $SCHEMA_REGISTRY_URL).")
@click.option(
    "--from-beginning",
    "start",
    flag_value="beginning",
    help="Start at the oldest retained record of each partition.",
)
@click.option(
    "--latest", "start", flag_value="latest", default=True, help="Only new records (default)."
)
@click.option("--last", type=click.IntRange(min=1), help="Start N records before the end.")
@click.option("-n", "--max-records", type=click.IntRange(min=1), help="Stop after N records.")
@click.option("-p", "--partition", "partitions", type=int, multiple=True, help="Only these.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds without a record (default: follow until Ctrl-C).",
)
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json")
@click.option("--fields", help="Comma-separated value fields to show (default: all).")
@click.option("--meta", is_flag=True, help="Add topic, partition, offset, timestamp and key.")
@click.option("--tz", "tz_name", default="UTC", show_default=True, help="Zone for instants.")
@click.option(
    "--bytes",
    "bytes_mode",
    type=click.Choice(["text", "base64"]),
    default="text",
    show_default=True,
    help="Avro bytes fields (raw frames): UTF-8 text when possible, or always base64.",
)
@click.option("--raw", is_flag=True, help="Do not decode Avro (no registry needed).")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("-X", "extra", multiple=True, metavar="PROP=VALUE", help="librdkafka property.")
def tail(
    topic: str,
    bootstrap: str | None,
    registry: str | None,
    start: str,
    last: int | None,
    max_records: int | None,
    partitions: tuple[int, ...],
    timeout: float | None,
    fmt: str,
    fields: str | None,
    meta: bool,
    tz_name: str,
    bytes_mode: str,
    raw: bool,
    connect_timeout: float,
    extra: tuple[str, ...],
) -> None:
    """Print the records of TOPIC (e.g. kis.bars.1s, kis.h0stcnt0, kis.status) decoded.

    JSON lines by default (pipe into jq); --format table for a quick look. Instants are
    ISO 8601 in UTC unless --tz KST.
    """
    from confluent_kafka import Consumer

    env = os.environ
    tz = _timezone(tz_name)
    endpoints = resolve_endpoints(bootstrap, registry, env, services_env_candidates())
    if raw:
        decoder = WireDecoder(None)
    else:
        if endpoints.registry is None:
            raise TailError(
                "no schema registry address: pass --registry URL, set SCHEMA_REGISTRY_URL, "
                "or use --raw to print undecoded payloads"
            )
        decoder = WireDecoder(registry_fetcher(endpoints.registry, env, connect_timeout))
    config = kafka_config(endpoints.bootstrap, env, extra)
    consumer = Consumer(config, logger=_quiet_librdkafka())
    wanted = [f.strip() for f in (fields or "").split(",") if f.strip()]
    printer = TablePrinter(wanted) if fmt == "table" else None
    try:
        existing = _topic_partitions(consumer, topic, endpoints, connect_timeout)
        missing = sorted(set(partitions) - set(existing))
        if missing:
            raise TailError(f"{topic} has partitions {existing}; no partition {missing}")
        chosen = sorted(set(partitions)) if partitions else existing
        consumer.assign(_start_offsets(consumer, topic, chosen, start, last))
        for item in consume(consumer, decoder, max_records=max_records, idle_timeout=timeout):
            if item is None:
                if printer is not None:
                    printer.flush()
                continue
            if isinstance(item, str):
                click.echo(item, err=True)
                if printer is not None:
                    printer.flush()
                continue
            item = Output(
                item.topic,
                item.partition,
                item.offset,
                item.timestamp,
                item.key,
                select_fields(item.value, wanted),
            )
            row = to_jsonable(item.as_dict(meta), tz, bytes_as_text=bytes_mode == "text")
            if printer is None:
                click.echo(orjson.dumps(row).decode())
            else:
                printer.add(_flatten_meta(row) if meta else row)
    except KeyboardInterrupt:
        pass
    finally:
        if printer is not None:
            printer.flush()
        consumer.close()
