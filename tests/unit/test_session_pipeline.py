"""The pipeline thread between sessions and the sink, with a recording fake sink."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from producer.catalogue import load_catalogue
from producer.codec import TopicNames
from producer.metrics import ProducerMetrics
from producer.pipeline import Pipeline
from producer.records import DecodeError, Record
from producer.status import StatusEvent

CATALOGUE = load_catalogue()
KEY, IV = "k" * 32, "i" * 16


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []
        self.pumps = 0

    def send(self, topic: str, key: bytes | None, value: bytes, received_at: int) -> None:
        self.sent.append((topic, key, value, received_at))

    def send_many(
        self, topic: str, messages: list[tuple[bytes | None, bytes]], received_at: int
    ) -> None:
        for key, value in messages:
            self.send(topic, key, value, received_at)

    def pump(self) -> None:
        self.pumps += 1


class FakeCodec:
    """Readable stand-ins for the Avro values, so the test sees what would be encoded."""

    topics = TopicNames("x.")

    def frame(
        self, raw: bytes, received_at: int, session: str, seq: int, tr_id: str | None
    ) -> bytes:
        return json.dumps([raw.decode("utf-8", "replace"), session, seq, tr_id]).encode()

    def record(self, record: Record) -> tuple[str, bytes]:
        body = json.dumps([record.symbol, record.session, record.seq, record.index, record.fields])
        return self.topics.raw(record.tr_id), body.encode()

    def dead_letter(self, error: DecodeError) -> bytes:
        return error.reason.encode()

    def status(self, event: StatusEvent) -> bytes:
        return event.event.encode()


def make() -> tuple[Pipeline, FakeSink, ProducerMetrics]:
    sink, metrics = FakeSink(), ProducerMetrics()
    codec: Any = FakeCodec()
    pipeline = Pipeline(sink=sink, codec=codec, metrics=metrics, catalogue=CATALOGUE)  # type: ignore[arg-type]
    return pipeline, sink, metrics


def trade_row(symbol: str, price: int) -> list[str]:
    spec = CATALOGUE["H0STCNT0"]
    row = [""] * spec.width
    row[spec.index_of("MKSC_SHRN_ISCD")] = symbol
    row[spec.index_of("STCK_CNTG_HOUR")] = "090001"
    row[spec.index_of("STCK_PRPR")] = str(price)
    if spec.date_field:
        row[spec.index_of(spec.date_field)] = "20261123"
    return row


def frame(rows: list[list[str]], tr_id: str = "H0STCNT0") -> bytes:
    return f"0|{tr_id}|{len(rows):03d}|{'^'.join('^'.join(r) for r in rows)}".encode()


def test_raw_frame_first_then_each_record_keyed_by_symbol() -> None:
    pipeline, sink, metrics = make()
    raw = frame([trade_row("005930", 71000), trade_row("005930", 71100)])
    pipeline.handle_frame(("s0.r.1", 7, 1_000, raw))
    topics = [t for t, *_ in sink.sent]
    assert topics == ["x.frames", "x.h0stcnt0", "x.h0stcnt0"]
    assert sink.sent[0][1] == b"005930"  # frames keyed by symbol too
    assert [json.loads(v)[3] for _, _, v, _ in sink.sent[1:]] == [0, 1]
    assert all(k == b"005930" for _, k, _, _ in sink.sent[1:])
    sample = metrics.registry.get_sample_value
    assert sample("kis_records_total", {"tr_id": "H0STCNT0"}) == 2
    assert sample("kis_frames_total", {"tr_id": "H0STCNT0"}) == 1
    assert pipeline.counts.records == 2 and pipeline.counts.frames == 1


def test_undecodable_frames_go_to_the_dead_letter_topic_and_nothing_stops() -> None:
    pipeline, sink, metrics = make()
    junk_frames = [b"0|H0ZZZZZ0|001|a^b", b"garbage~~~", b"0|H0STCNT0|0x1|1^2", b"\xff\xfe"]
    for i, junk in enumerate(junk_frames):
        pipeline.handle_frame(("s0.r.1", i + 1, 5, junk))
    pipeline.handle_frame(("s0.r.1", 9, 6, frame([trade_row("000660", 5)])))
    dead = [s for s in sink.sent if s[0] == "x.dead-letter"]
    assert len(dead) == 4 and pipeline.counts.dead_letters == 4
    assert [s[0] for s in sink.sent].count("x.frames") == 5  # every raw frame kept
    assert sink.sent[-1][0] == "x.h0stcnt0"
    errors = sum(
        sample.value
        for family in metrics.decode_errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert errors == 4


def test_acknowledged_keys_decrypt_later_frames_of_that_connection_only() -> None:
    pipeline, sink, _ = make()
    spec = CATALOGUE["H0STCNI0"]
    row = [""] * spec.width
    row[spec.symbol_index] = "005930"
    row[0] = "myhts"
    cipher = AES.new(KEY.encode(), AES.MODE_CBC, IV.encode())
    payload = base64.b64encode(cipher.encrypt(pad("^".join(row).encode(), 16))).decode()
    encrypted = f"1|H0STCNI0|001|{payload}".encode()
    ack = json.dumps(
        {"header": {"tr_id": "H0STCNI0", "tr_key": "myhts", "encrypt": "Y"},
         "body": {"rt_cd": "0", "msg_cd": "OPSP0000", "msg1": "SUBSCRIBE SUCCESS",
                  "output": {"key": KEY, "iv": IV}}}
    ).encode()  # fmt: skip
    pipeline.handle_frame(("s0.r.1", 1, 1, encrypted))  # before the ack: no key
    pipeline.handle_frame(("s0.r.1", 2, 2, ack))
    pipeline.handle_frame(("s0.r.1", 3, 3, encrypted))
    pipeline.handle_frame(("s0.r.2", 1, 4, encrypted))  # a new connection: old key gone
    topics = [t for t, *_ in sink.sent if t != "x.frames"]
    assert topics == ["x.dead-letter", "x.h0stcni0", "x.dead-letter"]
    assert [t for t, *_ in sink.sent].count("x.frames") == 4  # the ack is kept for redecode
    # Acks and encrypted frames share the slot's partition across its connections.
    assert {k for t, k, _, _ in sink.sent if t == "x.frames"} == {b"s0"}


def test_status_events_and_drift_are_published_and_counted() -> None:
    pipeline, sink, metrics = make()
    pipeline.handle_status(StatusEvent("gap", "s0", 10, gap_from=1, gap_to=9))
    assert sink.sent[-1][:2] == ("x.status", b"s0")
    wide = [*trade_row("005930", 1), "NEW"]
    pipeline.handle_frame(("s0.r.1", 1, 1, frame([wide])))
    record = json.loads(sink.sent[-1][2])
    assert record[4]["stck_prpr"] == 1
    assert metrics.drift.labels("H0STCNT0")._value.get() == 1
    assert metrics.gaps.labels("s0")._value.get() == 1


def test_the_thread_drains_everything_queued_before_stop() -> None:
    pipeline, sink, _ = make()
    pipeline.start()
    for i in range(2000):
        pipeline.submit_frame(("s0.r.1", i + 1, i, frame([trade_row("005930", i + 1)])))
    pipeline.stop(10)
    assert not pipeline.alive
    records = [json.loads(v) for t, _, v, _ in sink.sent if t == "x.h0stcnt0"]
    assert [r[2] for r in records] == list(range(1, 2001))
    assert sink.pumps > 0


def test_a_full_backlog_blocks_the_reader_until_there_is_room_and_loses_nothing() -> None:
    sink, metrics = FakeSink(), ProducerMetrics()
    stalled = threading.Event()
    send_many = sink.send_many

    def slow_send_many(topic: str, messages: list[tuple[bytes | None, bytes]], at: int) -> None:
        stalled.wait(10)  # the broker side is stuck: the pipeline thread cannot go on
        send_many(topic, messages, at)

    sink.send_many = slow_send_many  # type: ignore[method-assign]
    codec: Any = FakeCodec()
    pipeline = Pipeline(sink=sink, codec=codec, metrics=metrics, catalogue=CATALOGUE,  # type: ignore[arg-type]
                        max_backlog=10)  # fmt: skip
    pipeline.start()
    submitted: list[int] = []

    def read_socket() -> None:
        for i in range(100):
            pipeline.submit_frame(("s0.r.1", i + 1, i, frame([trade_row("005930", i + 1)])))
            submitted.append(i)

    reader = threading.Thread(target=read_socket)
    reader.start()
    time.sleep(0.5)
    assert reader.is_alive(), "the reader must wait while the backlog is full"
    assert len(submitted) <= 12 and pipeline.backlog <= 10
    stalled.set()
    reader.join(10)
    pipeline.stop(10)
    assert not reader.is_alive() and len(submitted) == 100
    records = [json.loads(v) for t, _, v, _ in sink.sent if t == "x.h0stcnt0"]
    assert [r[2] for r in records] == list(range(1, 101))  # all of them, in order
    assert metrics.backpressure._value.get() >= 0.4


def test_a_frame_that_cannot_be_encoded_is_dead_lettered_whole() -> None:
    pipeline, sink, _ = make()

    def fail_on_second(record: Record) -> tuple[str, bytes]:
        if record.index == 1:
            raise TypeError("expected int")
        return FakeCodec().record(record)

    pipeline._codec.record = fail_on_second  # type: ignore[method-assign]
    raw = frame([trade_row("005930", 1), trade_row("005930", 2)])
    pipeline.handle_frame(("s0.r.1", 1, 1, raw))
    assert [t for t, *_ in sink.sent] == ["x.frames", "x.dead-letter"]
    assert sink.sent[1][2].startswith(b"internal: cannot encode: TypeError")
