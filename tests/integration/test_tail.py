"""`kis-stream tail` through the real broker and registry.

Records are produced with confluent-kafka's own AvroSerializer (registry, Confluent wire
format, TopicNameStrategy), so the test checks tail against the format every downstream
client sees, including the Avro logical types of the project's envelope.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from kis_stream.cli import main

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]

SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "TailProbe",
        "namespace": "kis.test",
        "fields": [
            {"name": "symbol", "type": "string"},
            {"name": "seq", "type": "long"},
            {
                "name": "event_time",
                "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            },
            {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {
                "name": "stck_cntg_hour",
                "type": ["null", {"type": "int", "logicalType": "time-millis"}],
            },
            {"name": "bsop_date", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "stck_prpr", "type": ["null", "long"]},
            {"name": "prdy_ctrt", "type": ["null", "double"]},
            {"name": "hts_kor_isnm", "type": ["null", "string"]},
        ],
    }
)
BASE_TIME = dt.datetime(2025, 1, 16, 0, 30, 1, 250_000, tzinfo=dt.UTC)  # 09:30:01.250 KST
PARTITIONS = 2
QUIET = logging.getLogger("tests.tail.librdkafka")  # no reconnect chatter after the session
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def record(seq: int, symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "seq": seq,
        "event_time": BASE_TIME + dt.timedelta(seconds=seq),
        "received_at": BASE_TIME + dt.timedelta(seconds=seq, microseconds=1_234),
        "stck_cntg_hour": dt.time(9, 30, 1 + seq % 50, 250_000),
        "bsop_date": dt.date(2025, 1, 16),
        "stck_prpr": 71_000 + seq,
        "prdy_ctrt": None if seq % 2 else 1.25,
        "hts_kor_isnm": "삼성전자",
    }


class Feed:
    """A test topic and a way to append Avro records to a chosen partition."""

    def __init__(self, bootstrap: str, registry_url: str) -> None:
        self.bootstrap, self.registry_url = bootstrap, registry_url
        self.topic = f"kis.test.tail.{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)]).values():
            future.result(30)
        self.serialize = AvroSerializer(SchemaRegistryClient({"url": registry_url}), SCHEMA)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True}, logger=QUIET
        )
        self.sent: list[dict[str, Any]] = []

    def send(self, seq: int, partition: int) -> None:
        symbol = ("005930", "000660")[partition]
        value = record(seq, symbol)
        ctx = SerializationContext(self.topic, MessageField.VALUE)
        self.producer.produce(
            self.topic, key=symbol.encode(), value=self.serialize(value, ctx), partition=partition
        )
        self.sent.append({**value, "partition": partition})

    def flush(self) -> None:
        assert self.producer.flush(30) == 0

    def tail(self, *args: str) -> Result:
        return CliRunner().invoke(
            main,
            [
                "tail",
                self.topic,
                "--bootstrap",
                self.bootstrap,
                "--registry",
                self.registry_url,
                *args,
            ],
        )


@pytest.fixture
def feed(services: Any) -> Iterator[Feed]:
    feed = Feed(services.bootstrap, services.registry_url)
    for seq in range(6):
        feed.send(seq, seq % PARTITIONS)
    feed.flush()
    yield feed
    AdminClient({"bootstrap.servers": services.bootstrap}).delete_topics([feed.topic])


def lines(result: Result) -> list[Any]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def expected_json(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "symbol": value["symbol"],
        "seq": value["seq"],
        "event_time": value["event_time"].isoformat(timespec="milliseconds"),
        "received_at": value["received_at"].isoformat(timespec="microseconds"),
        "stck_cntg_hour": value["stck_cntg_hour"].isoformat(timespec="milliseconds"),
        "bsop_date": "2025-01-16",
        "stck_prpr": value["stck_prpr"],
        "prdy_ctrt": value["prdy_ctrt"],
        "hts_kor_isnm": "삼성전자",
    }


def test_from_beginning_prints_every_record_decoded(feed: Feed) -> None:
    got = lines(feed.tail("--from-beginning", "-n", "6", "--timeout", "20"))
    want = [expected_json(v) for v in feed.sent]
    assert sorted(got, key=lambda r: r["seq"]) == want
    assert got[0]["event_time"].endswith("+00:00")  # instants in UTC, ISO 8601


def test_meta_names_the_position_and_key(feed: Feed) -> None:
    got = lines(feed.tail("--from-beginning", "-n", "6", "--timeout", "20", "--meta"))
    for row in got:
        assert row["topic"] == feed.topic
        assert row["key"] == row["value"]["symbol"]
        assert row["partition"] == ("005930", "000660").index(row["key"])
        assert row["offset"] == row["value"]["seq"] // PARTITIONS  # 3 records per partition
        assert dt.datetime.fromisoformat(row["timestamp"]).tzinfo is not None


def test_partition_and_last_select_what_is_read(feed: Feed) -> None:
    only_one = lines(feed.tail("--from-beginning", "-p", "1", "-n", "3", "--timeout", "10"))
    assert [r["seq"] for r in only_one] == [1, 3, 5]
    newest = lines(feed.tail("--last", "1", "-n", "2", "--timeout", "10", "--fields", "seq,symbol"))
    assert sorted(newest, key=lambda r: r["seq"]) == [
        {"seq": 4, "symbol": "005930"},
        {"seq": 5, "symbol": "000660"},
    ]


def test_latest_prints_only_new_records(feed: Feed) -> None:
    stop = threading.Event()

    def keep_sending() -> None:
        seq = 100
        while not stop.is_set():
            feed.send(seq, 0)
            feed.flush()
            seq += 1
            time.sleep(0.3)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        got = lines(feed.tail("--latest", "-n", "2", "--timeout", "30"))
    finally:
        stop.set()
        sender.join(10)
    assert len(got) == 2
    assert all(r["seq"] >= 100 for r in got), "records produced before the start were printed"


def test_table_format_shows_columns_and_values(feed: Feed) -> None:
    result = feed.tail(
        "--from-beginning",
        "-p",
        "0",
        "-n",
        "3",
        "--timeout",
        "10",
        "--format",
        "table",
        "--tz",
        "KST",
    )
    assert result.exit_code == 0, result.output
    assert "stck_prpr" in result.stdout and "71000" in result.stdout
    assert "삼성전자" in result.stdout
    assert "+09:00" in result.stdout  # --tz KST renders instants in Korea time


def test_missing_topic_is_a_clear_error(services: Any) -> None:
    result = CliRunner().invoke(
        main,
        ["tail", "kis.no-such-topic", "--bootstrap", services.bootstrap, "--raw"],
    )
    assert result.exit_code == 1
    assert "topic 'kis.no-such-topic' does not exist" in result.output


def test_missing_partition_is_a_clear_error(feed: Feed) -> None:
    result = feed.tail("-p", "7", "--timeout", "1")
    assert result.exit_code == 1
    assert "no partition [7]" in result.output


def test_raw_mode_needs_no_registry(feed: Feed) -> None:
    result = CliRunner().invoke(
        main,
        [
            *("tail", feed.topic, "--bootstrap", feed.bootstrap, "--raw", "--from-beginning"),
            *("-n", "1", "--timeout", "20", "--meta"),
        ],
        env={"SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"},
    )
    [row] = lines(result)
    assert row["key"] in ("005930", "000660")
    assert isinstance(row["value"]["schema_id"], int) and row["value"]["avro_base64"]


# --- docs/consuming.md's Python example, run as a user would -----------------------------


def doc_example() -> str:
    text = (ROOT / "docs" / "consuming.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/consuming.md has no python example"
    return match.group(1)


def bar(symbol: str, second: int, revision: int = 0) -> dict[str, Any]:
    start = BASE_TIME.replace(microsecond=0) + dt.timedelta(seconds=second)
    return {
        "symbol": symbol,
        "venue": "KRX",
        "window_start": start,
        "window_end": start + dt.timedelta(seconds=1),
        "open": 71_000,
        "high": 71_100 + second,
        "low": 70_900,
        "close": 71_050,
        "volume": 1_000 + second,
        "turnover": 71_050 * (1_000 + second),
        "vwap": 71_050.0,
        "trade_count": 7,
        "buy_volume": 600,
        "sell_volume": 400,
        "revision": revision,
    }


def test_consuming_doc_example_prints_bars(services: Any, tmp_path: Path) -> None:
    topic = f"kis.test.bars.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": services.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    schema = (ROOT / "schemas" / "derived" / "bars_1s.avsc").read_text(encoding="utf-8")
    serialize = AvroSerializer(SchemaRegistryClient({"url": services.registry_url}), schema)
    producer = Producer({"bootstrap.servers": services.bootstrap}, logger=QUIET)
    sent = [bar("005930", 0), bar("000660", 0), bar("005930", 0, revision=1)]
    for value in sent:
        key = f"{value['symbol']}|{value['venue']}"
        ctx = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, key=key.encode(), value=serialize(value, ctx))
    assert producer.flush(30) == 0

    script = tmp_path / "bars.py"
    script.write_text(doc_example(), encoding="utf-8")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": services.bootstrap,
        "SCHEMA_REGISTRY_URL": services.registry_url,
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), topic], env=env, stdout=subprocess.PIPE, text=True
    )
    printed: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [printed.put(x) for x in proc.stdout or []])
    reader.start()
    got: list[str] = []
    try:
        while len(got) < len(sent):
            got.append(printed.get(timeout=60).rstrip("\n"))
    finally:
        proc.send_signal(signal.SIGINT)  # the example's `finally` closes the consumer
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        admin.delete_topics([topic])
    assert got == [
        "00:30:01 005930 KRX O 71000 H 71100 L 70900 C 71050 V 1000 n 7 rev 0",
        "00:30:01 000660 KRX O 71000 H 71100 L 70900 C 71050 V 1000 n 7 rev 0",
        "00:30:01 005930 KRX O 71000 H 71100 L 70900 C 71050 V 1000 n 7 rev 1",
    ]
