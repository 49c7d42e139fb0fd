"""The on-disk spool: order, acknowledgement, restart recovery, torn tails, prepend."""

from __future__ import annotations

from pathlib import Path

from producer.spool import Spool, SpoolMessage


def msg(i: int, topic: str = "kis.h0stcnt0") -> SpoolMessage:
    key = None if i % 7 == 0 else f"k{i % 3}".encode()
    return SpoolMessage(topic, key, f"value-{i}".encode() * (1 + i % 5), 1_700_000_000_000_000 + i)


def drain(spool: Spool, ack: bool = True) -> list[SpoolMessage]:
    out = []
    while (item := spool.peek()) is not None:
        offset, message = item
        spool.advance()
        out.append(message)
        if ack:
            spool.ack(offset)
    return out


def test_reads_back_in_append_order_and_frees_acked_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    sent = [msg(i) for i in range(50)]
    for m in sent:
        spool.append(m)
    assert spool.depth == 50
    assert len(list(tmp_path.glob("*.seg"))) > 3  # rolled into several segments
    assert drain(spool) == sent
    assert spool.depth == 0 and spool.unread == 0
    spool.close()
    assert list(tmp_path.glob("*.seg")) == []


def test_peek_does_not_consume(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(msg(1))
    spool.append(msg(2))
    first = spool.peek()
    assert first is not None and spool.peek() == first
    spool.advance()
    second = spool.peek()
    assert second is not None and second[1] == msg(2)


def test_restart_resends_only_unacknowledged_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    sent = [msg(i) for i in range(40)]
    for m in sent:
        spool.append(m)
    handed = []
    while (item := spool.peek()) is not None and len(handed) < 30:
        spool.advance()
        handed.append(item)
    # Out-of-order acks (different partitions): all of the first 30 except 12 and 20.
    for offset, _ in reversed(handed):
        if sent.index(_) not in (12, 20):
            spool.ack(offset)
    spool.close()

    again = Spool(tmp_path, segment_bytes=300)
    assert again.depth == 12
    remaining = drain(again)
    # Acks arrive out of order across partitions; both the contiguous watermark and the
    # acks beyond it survive the restart, so exactly the unacknowledged records come back.
    assert [sent.index(m) for m in remaining] == [12, 20, *range(30, 40)]
    assert again.depth == 0


def test_fully_acked_segments_do_not_come_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100)
    for i in range(10):
        spool.append(msg(i))
    drain(spool)
    spool.append(msg(99))
    spool.close()
    again = Spool(tmp_path)
    assert drain(again) == [msg(99)]


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(msg(i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # crash mid-record

    again = Spool(tmp_path)
    assert again.depth == 4
    again.append(msg(5))
    assert drain(again) == [msg(i) for i in (0, 1, 2, 3, 5)]


def test_corrupt_record_stops_the_segment_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(msg(i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # flip a byte of the last record's value
    segment.write_bytes(bytes(data))
    assert drain(Spool(tmp_path)) == [msg(0), msg(1)]


def test_prepend_goes_before_everything_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(msg(10))
    spool.append(msg(11))
    spool.prepend([msg(1), msg(2)])
    spool.close()
    assert drain(Spool(tmp_path)) == [msg(1), msg(2), msg(10), msg(11)]


def test_duplicate_and_stale_acks_are_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(msg(1))
    spool.append(msg(2))
    item = spool.peek()
    assert item is not None
    spool.advance()
    spool.ack(item[0])
    spool.ack(item[0])
    spool.ack((123, 0))
    assert spool.depth == 1


def test_reads_what_was_just_appended_to_the_active_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    out = []
    for i in range(20):
        spool.append(msg(i))
        out.extend(drain(spool))
    assert out == [msg(i) for i in range(20)]
    assert spool.size_bytes > 0


def test_sink_without_a_broker_spools_past_memory_and_keeps_everything_in_order(
    tmp_path: Path,
) -> None:
    from producer.metrics import ProducerMetrics
    from producer.sink import KafkaSink, producer_config

    config = producer_config(
        {"bootstrap.servers": "127.0.0.1:9", "log_level": "0"},
        compression="lz4",
        linger_ms=1,
        memory_mb=1,
        memory_messages=50,
    )
    spool = Spool(tmp_path)
    sink = KafkaSink(config, spool, ProducerMetrics())
    sent = [msg(i, topic=f"t{i % 3}") for i in range(200)]
    for m in sent:
        sink.send(m.topic, m.key, m.value, m.received_at)
        sink.pump()
    # librdkafka holds its 50; the rest went to disk. (Not `in_flight == 50`: len(producer)
    # also counts error events such as "broker unreachable" waiting to be polled.)
    assert sink.spooling and spool.unread == 150
    spooled = sink.close(flush_timeout_s=0.2)  # broker unreachable: purge into the spool
    assert spooled == 50
    again = Spool(tmp_path)
    assert drain(again) == sent  # memory first (prepended), then the spool, in send order


def test_sink_purge_keeps_frames_in_order_and_each_keys_order_within_a_frame(
    tmp_path: Path,
) -> None:
    from producer.metrics import ProducerMetrics
    from producer.sink import KafkaSink, producer_config

    config = producer_config(
        {"bootstrap.servers": "127.0.0.1:9", "log_level": "0"},
        compression="lz4",
        linger_ms=1,
        memory_mb=1,
        memory_messages=50,
    )
    sink = KafkaSink(config, Spool(tmp_path), ProducerMetrics())
    sent: list[SpoolMessage] = []
    for f in range(30):  # frames of four records; two of them share a key (symbol)
        batch = [(k, f"{f}-{j}".encode()) for j, k in enumerate([b"k0", b"k1", b"k0", b"k2"])]
        sink.send_many(f"t{f % 2}", batch, 1_700_000_000_000_000 + f)
        sent += [SpoolMessage(f"t{f % 2}", k, v, 1_700_000_000_000_000 + f) for k, v in batch]
        sink.pump()
    assert sink.spooling
    assert sink.close(flush_timeout_s=0.2) == 50  # the frame that hit the limit was split
    drained = drain(Spool(tmp_path))
    assert sorted(drained, key=lambda m: m.value) == sorted(sent, key=lambda m: m.value)
    assert [m.received_at for m in drained] == [m.received_at for m in sent]  # frame order
    for topic in ("t0", "t1"):
        for key in (b"k0", b"k1", b"k2"):
            mine = [m for m in drained if (m.topic, m.key) == (topic, key)]
            assert mine == [m for m in sent if (m.topic, m.key) == (topic, key)]
