"""Test support for the producer: run it against the simulator, read Kafka independently.

The reader here shares no code with the producer: a plain confluent_kafka Consumer, schemas
fetched by id from the registry's Confluent API, fastavro decoding. The expected values come
from the simulator's truth log, typed by the catalogue's declared field types.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import io
import json
import logging
import os
import shutil
import time
import traceback
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition

from kis_stream.logging import JsonFormatter, secret_filter_for
from kis_stream.settings import Settings, load_settings
from producer.catalogue import TrSpec, load_catalogue
from producer.service import ProducerService
from simulator import MarketConfig, SimConfig, SimHandle, run_in_thread
from simulator.truth import read_truth

CATALOGUE = load_catalogue()
EPOCH = dt.date(1970, 1, 1)
ROOT = Path(__file__).resolve().parents[2]
P = ParamSpec("P")
R = TypeVar("R")


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# --- the simulator and the producer under test ---


@contextlib.contextmanager
def simulator(tmp_path: Path, symbols: tuple[str, ...], **config: Any) -> Iterator[SimHandle]:
    market = MarketConfig(
        seed=config.pop("seed", 11), symbols=symbols, rate=config.pop("rate", 4.0)
    )
    ping = config.pop("ping_interval", 2.0)
    sim_config = SimConfig(
        market=market, truth=tmp_path / "truth.jsonl", ping_interval=ping, **config
    )
    handle = run_in_thread(sim_config)
    try:
        yield handle
    finally:
        handle.stop()


def producer_settings(services: Any, sim: SimHandle, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": services.bootstrap,
        "schema_registry_url": services.registry_url,
        "kis_url": sim.base_url,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
        "topic_partitions": 3,
        "producer_spool_dir": tmp_path / "spool",
        "producer_linger_ms": 2,
        "metrics_port": 0,
        "kis_subscribe_interval_s": 0.01,
        "kis_reconnect_initial_s": 0.2,
        "kis_reconnect_max_s": 1.0,
        "kis_silence_timeout_s": 0,
        "shutdown_flush_timeout_s": 20,
        "kis_app_keys": [],
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@contextlib.contextmanager
def running(settings: Settings, **kwargs: Any) -> Iterator[ProducerService]:
    service = ProducerService(settings, **kwargs)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def settle(service: ProducerService, timeout: float = 30.0) -> None:
    """Every frame read is handled and every message acknowledged (or spooled)."""

    def quiet() -> bool:
        pipeline, sink = service.pipeline, service.sink
        return bool(
            pipeline is not None and pipeline.backlog == 0
            and sink is not None and sink.in_flight == 0 and not sink.spooling
        )  # fmt: skip

    wait_until(quiet, timeout, "the producer to drain")


# --- the independent reader ---


class Registry:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._schemas: dict[int, Any] = {}

    def schema(self, schema_id: int) -> Any:
        if schema_id not in self._schemas:
            with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}", timeout=10) as r:
                text = json.loads(r.read())["schema"]
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        return self._schemas[schema_id]

    def decode(self, value: bytes) -> dict[str, Any]:
        assert value[0] == 0, "not Confluent wire format"
        schema = self.schema(int.from_bytes(value[1:5], "big"))
        datum = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
        assert isinstance(datum, dict)
        return datum


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]


def read_topics(services: Any, topics: list[str], registry: Registry) -> list[Message]:
    """Every message of `topics` up to their current end, decoded."""
    consumer = Consumer(
        {"bootstrap.servers": services.bootstrap, "group.id": f"oracle-{uuid.uuid4().hex}",
         "enable.auto.commit": False}
    )  # fmt: skip
    out: list[Message] = []
    try:
        assignment: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            if topic not in metadata.topics:
                continue
            for p in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    assignment.append(TopicPartition(topic, p, low))
                    ends[(topic, p)] = high
        consumer.assign(assignment)
        remaining = set(ends)
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=1.0):
                assert msg.error() is None, msg.error()
                topic, part, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                if offset >= ends[(topic, part)] - 1:
                    remaining.discard((topic, part))
                if offset < ends[(topic, part)]:
                    out.append(
                        Message(topic, part, offset, msg.key(), registry.decode(msg.value() or b""))
                    )
        assert not remaining, f"could not read to the end of {remaining}"
    finally:
        consumer.close()
        if _current is not None:
            _current.read.extend(out)
    return out


# --- evidence of a failure, kept after the test's tmp dir is gone ---


@dataclass
class Evidence:
    """What a failing test leaves behind: its tmp dir's truth files and logs, and what the
    oracle read from Kafka (`read_topics` adds to the current test's)."""

    work: Path
    read: list[Message] = dataclasses.field(default_factory=list)


_current: Evidence | None = None
_LOGGERS = ("producer", "kis_stream", "simulator")


def artifacts_dir() -> Path:
    """$KIS_TEST_ARTIFACTS, else the repository's .artifacts/ (ignored by git)."""
    return Path(os.environ.get("KIS_TEST_ARTIFACTS") or ROOT / ".artifacts")


def keeps_evidence(test: Callable[P, R]) -> Callable[P, R]:
    """On failure, copy the test's evidence to a stable directory named in the failure.

    The test's `tmp_path` (with the simulator's truth files) is deleted by pytest in later
    runs, and the broker with the topics at the end of the session: a rare failure of the
    producer fault tests left nothing to look at. Kept: every *.jsonl (truth) and *.log file
    under tmp_path, the producer's and simulator's log at DEBUG (`producer.log`), the
    messages the oracle read (`kafka.jsonl`) and the failure (`diagnosis.txt`).
    """

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        global _current
        work = kwargs.get("tmp_path")
        assert isinstance(work, Path), "a test keeping evidence takes the tmp_path fixture"
        evidence = _current = Evidence(work)
        handler = secret_filter_for(logging.FileHandler(work / "producer.log", delay=True))
        handler.setFormatter(JsonFormatter())
        loggers = [logging.getLogger(name) for name in _LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        try:
            return test(*args, **kwargs)
        except (Exception, pytest.fail.Exception) as exc:
            handler.flush()
            kept = keep_evidence(evidence, test.__name__, exc)
            note = f"evidence of this failure kept in {kept}"
            if isinstance(exc, AssertionError):
                raise AssertionError(f"{exc}\n{note}") from exc
            exc.add_note(note)
            raise
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(handler)
                logger.setLevel(level)
            handler.close()
            _current = None

    return run


def keep_evidence(evidence: Evidence, name: str, exc: BaseException) -> Path:
    """Copy a failed test's evidence to a new directory under `artifacts_dir()`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    kept = artifacts_dir() / "producer-faults" / f"{name}-{stamp}-{uuid.uuid4().hex[:4]}"
    kept.mkdir(parents=True)
    for path in sorted(evidence.work.rglob("*")):
        if path.is_file() and path.suffix in (".jsonl", ".log"):
            target = kept / path.relative_to(evidence.work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    (kept / "diagnosis.txt").write_text("".join(traceback.format_exception(exc)))
    with (kept / "kafka.jsonl").open("w") as out:
        for msg in evidence.read:
            entry = {
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "key": msg.key.decode("utf-8", "replace") if msg.key is not None else None,
                "value": msg.value,
            }
            out.write(json.dumps(entry, default=str) + "\n")
    return kept


# --- the truth, typed ---


def typed(spec: TrSpec, row: list[str]) -> dict[str, Any]:
    """The values a correct decoder must produce for a truth row, by the catalogue's types."""
    values: dict[str, Any] = {}
    for field, text in zip(spec.fields, row, strict=False):
        values[field.column] = _typed(field.type, text)
    for field in spec.fields[len(row) :]:
        values[field.column] = None
    return values


def _typed(kind: str, text: str) -> Any:
    if text in ("", "(null)") or (kind == "date" and text == "00000000"):
        return None
    if kind == "long":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "time":
        return (int(text[:2]) * 3600 + int(text[2:4]) * 60 + int(text[4:6])) * 1000
    if kind == "date":
        return (dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - EPOCH).days
    return text


def plain(value: Any) -> Any:
    """fastavro's logical-type objects back to the wire's numbers."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.time):
        return (
            (value.hour * 60 + value.minute) * 60 + value.second
        ) * 1000 + value.microsecond // 1000
    if isinstance(value, dt.date):
        return (value - EPOCH).days
    return value


def truth_by_stream(truth_path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(catalogue tr_id, symbol) -> sent, well-formed truth records in the order sent."""
    streams: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in read_truth(truth_path):
        if not entry.get("sent") or "fields" not in entry or entry.get("record") is None:
            continue
        if str(entry.get("fault", "")).startswith("malformed"):
            continue
        spec = CATALOGUE[entry["tr_id"]]
        symbol = entry["fields"][spec.symbol_index]
        streams[(spec.tr_id, symbol)].append(entry)
    return streams


def kafka_by_stream(messages: list[Message], prefix: str) -> dict[tuple[str, str], list[Message]]:
    streams: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for msg in sorted(messages, key=lambda m: (m.topic, m.partition, m.offset)):
        tr_topic = msg.topic.removeprefix(prefix)
        spec = CATALOGUE.get(tr_topic.upper())
        if spec is None:
            continue
        streams[(spec.tr_id, msg.value["symbol"])].append(msg)
    return streams


def assert_exactly_the_truth(
    truth: dict[tuple[str, str], list[dict[str, Any]]],
    kafka: dict[tuple[str, str], list[Message]],
    gaps: list[tuple[int, int]] | None = None,
) -> int:
    """Every sent record exactly once, per-symbol order kept, every field equal.

    `gaps` are the (gap_from, gap_to) windows the producer reported on the status topic. A
    record the simulator wrote to a connection that was then torn down was never delivered;
    the only records allowed to be absent are the lost tail of a connection the producer
    reported a gap for (see `lost_tail`), or records sent inside a reported gap. Returns the
    records matched.
    """
    windows = gaps or []
    assert set(kafka) <= set(truth), f"streams nobody sent: {set(kafka) - set(truth)}"
    total = 0
    delivered: dict[Any, tuple[int, int]] = {}
    """Per simulator session: its last frame found in Kafka, and when the producer got it."""
    unmatched: list[tuple[tuple[str, str], dict[str, Any], list[Message], int]] = []
    for stream, expected in truth.items():
        got = kafka.get(stream, [])
        spec = CATALOGUE[stream[0]]
        position = 0
        for entry in expected:
            if position < len(got) and _same(spec, entry, got[position]):
                received_at = _micros(got[position].value["received_at"])
                last = delivered.get(entry["session"])
                if last is None or entry["frame"] > last[0]:
                    delivered[entry["session"]] = (entry["frame"], received_at)
                position += 1
                continue
            unmatched.append((stream, entry, got, position))
        assert position == len(got), f"{stream}: {len(got) - position} extra or duplicated records"
        total += position
    for stream, entry, got, position in unmatched:
        in_gap = any(start <= entry["at"] <= end for start, end in windows)
        assert in_gap or lost_tail(entry, delivered, windows), (
            f"{stream}: record sent at {entry['at']} (frame {entry['frame']} of simulator "
            f"session {entry['session']}) is missing or out of order: "
            f"{len(got)} in Kafka, {len(expected)} sent; gaps reported {windows}; "
            f"last frame of that session in Kafka (frame, received_at): "
            f"{delivered.get(entry['session'])}; "
            + _why_not(CATALOGUE[stream[0]], entry, got, position)
        )
    return total


def lost_tail(
    entry: dict[str, Any], delivered: dict[Any, tuple[int, int]], gaps: list[tuple[int, int]]
) -> bool:
    """True if `entry` is in the lost tail of its connection, which a reported gap covers.

    What a dropped connection loses is the end of its stream: frames the simulator had
    written that the producer had not read yet. Their send times can lie *before* the gap's
    start, which is when the producer received its last message: when it reads behind the
    simulator (under load), the simulator wrote the lost frames before the producer got the
    last one it read. So, by stream position rather than clock: no later frame of the same
    simulator session reached Kafka, and the first gap reported after that session's last
    delivered frame ends after `entry` was sent.
    """
    last = delivered.get(entry.get("session"))
    if last is None or entry.get("frame") is None or entry["frame"] <= last[0]:
        return False
    after = [gap for gap in gaps if gap[0] >= last[1]]
    return bool(after) and entry["at"] <= min(after)[1]


def _why_not(spec: TrSpec, entry: dict[str, Any], got: list[Message], position: int) -> str:
    """What Kafka has instead: the record elsewhere (out of order), or how the next differs."""
    found = [i for i, msg in enumerate(got) if _same(spec, entry, msg)]
    if found:
        return f"found at Kafka position(s) {found}, expected at {position}"
    if position >= len(got):
        return "nothing left in Kafka for this stream"
    msg = got[position]
    want = typed(spec, entry["fields"])
    have = {f.column: plain(msg.value[f.column]) for f in spec.fields}
    diff = {k: (want.get(k), have.get(k)) for k in want if want.get(k) != have.get(k)}
    return (
        f"not in Kafka; the next one there (offset {msg.offset}, partition {msg.partition}, "
        f"received_at {msg.value.get('received_at')}, session {msg.value.get('session')}, "
        f"seq {msg.value.get('seq')}) differs in (want, have) {dict(list(diff.items())[:6])}"
    )


def _same(spec: TrSpec, entry: dict[str, Any], msg: Message) -> bool:
    row = entry["fields"]
    have = {f.column: plain(msg.value[f.column]) for f in spec.fields}
    return (
        have == typed(spec, row)
        and msg.key == row[spec.symbol_index].encode()
        and msg.value["tr_id"] == entry["tr_id"]
        and (msg.value["extra_fields"] or []) == row[len(spec.fields) :]
    )


def reported_gaps(messages: list[Message], prefix: str) -> list[tuple[int, int]]:
    """(gap_from, gap_to) in epoch microseconds of every gap event on the status topic."""
    out = []
    for msg in messages:
        if msg.topic == prefix + "status" and msg.value["event"] == "gap":
            out.append((_micros(msg.value["gap_from"]), _micros(msg.value["gap_to"])))
    return out


def _micros(value: Any) -> int:
    return int(value.timestamp() * 1_000_000) if isinstance(value, dt.datetime) else int(value)


def _diff(want: dict[str, Any], have: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}: want {want[k]!r} have {have.get(k)!r}" for k in want if want[k] != have.get(k)
    )
