"""Receive marks (producer/marks.py): the watermark never passes a record not yet on the broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from producer.marks import Mark, MarkPublisher, ReceiveMarks, decode_mark, encode_mark
from producer.metrics import ProducerMetrics
from producer.sink import KafkaSink, producer_config
from producer.spool import Spool

T0 = 1_800_000_000_000_000


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def tick(self, us: int = 10) -> int:
        self.now += us
        return self.now


class Delivered:
    """The parts of a confluent_kafka Message a delivery callback reads."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


def frame(marks: ReceiveMarks, clock: Clock, messages: int) -> int:
    """A frame stamped, handed to the sink as `messages` messages, released by the pipeline."""
    clock.tick()
    at = marks.stamp()
    assert marks.hold(at, messages)
    marks.settle(at)  # the pipeline's own hold, once the frame's messages are queued
    return at


def test_out_of_order_acknowledgements_hold_the_watermark_at_the_oldest_open_record() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    a, b, c = (frame(marks, clock, 1) for _ in range(3))
    marks.acked(c, True, "kis.h0nxasp0", 0, 7)
    marks.acked(b, True, "kis.h0stasp0", 0, 3)
    mark = marks.snapshot()
    assert mark.watermark == a - 1  # b and c are on the broker, a is not
    assert mark.offsets == {("kis.h0nxasp0", 0): 8, ("kis.h0stasp0", 0): 4}
    marks.acked(a, True, "kis.h0stasp0", 0, 2)  # earlier offset, acknowledged last
    clock.tick(1_000)
    mark = marks.snapshot()
    assert mark.watermark == clock.now - 1  # nothing open: everything up to now is on the broker
    assert mark.offsets[("kis.h0stasp0", 0)] == 4  # one past the highest, not the last


def test_a_frame_is_open_until_every_one_of_its_messages_is_acknowledged() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    at = frame(marks, clock, 3)
    marks.acked(at, True, "t", 0, 0)
    marks.acked(at, True, "t", 1, 0)
    assert marks.snapshot().watermark == at - 1
    marks.acked(at, True, "t", 2, 0)
    clock.tick()
    assert marks.snapshot().watermark >= at


def test_a_refused_message_settles_a_purged_one_does_not(tmp_path: Path) -> None:
    config = producer_config(
        {"bootstrap.servers": "127.0.0.1:9", "log_level": "0"},
        compression="none",
        linger_ms=1,
        memory_mb=1,
        memory_messages=100,
    )
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    sink = KafkaSink(config, Spool(tmp_path / "spool"), ProducerMetrics(), marks=marks)
    sink._delivered(0, 1, None, False, None, Delivered("warm-up", 0, 0))  # type: ignore[arg-type]
    refused = clock.tick()
    assert marks.stamp() == refused
    sink.send_many("kis.h0stasp0", [(b"005930", b"x")], refused)
    marks.settle(refused)
    kept = clock.tick()
    assert marks.stamp() == kept
    sink.send_many("kis.h0nxasp0", [(b"005930", b"y")], kept)
    marks.settle(kept)
    assert marks.snapshot().watermark == refused - 1
    error: Any = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    sink._delivered(1, refused, None, True, error, Delivered("kis.h0stasp0", 0, -1))  # type: ignore[arg-type]
    assert marks.snapshot().watermark == kept - 1  # refused for good: never to be appended
    # The broker is unreachable: close purges the second message into the spool for the next
    # run, which sends it with its receive time: the mark must never have passed it.
    sink.close(flush_timeout_s=0.2)
    assert marks.snapshot().watermark == kept - 1
    assert marks.open_stamps == 1


def test_a_frame_stamped_by_one_session_holds_the_mark_while_another_sessions_pass() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    clock.tick()
    in_hand = marks.stamp()  # session A read a frame, not yet queued (e.g. backpressure)
    later = [frame(marks, clock, 1) for _ in range(5)]  # session B: handled and acknowledged
    for i, at in enumerate(later):
        marks.acked(at, True, "kis.h0stasp0", 1, i)
    assert marks.snapshot().watermark == in_hand - 1
    marks.settle(in_hand)  # A's frame was a PINGPONG: not passed on
    clock.tick()
    assert marks.snapshot().watermark >= later[-1]


def test_two_frames_with_the_same_stamp_are_both_waited_for() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    clock.tick()
    first, second = marks.stamp(), marks.stamp()  # two sessions, the same microsecond
    assert first == second
    marks.hold(first)
    marks.settle(first)
    marks.acked(first, True, "t", 0, 0)
    assert marks.snapshot().watermark == first - 1  # the second frame is still in hand
    marks.settle(second)
    clock.tick()
    assert marks.snapshot().watermark >= first


def test_a_clock_stepping_back_falls_back_to_the_oldest_open_stamp() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    late = frame(marks, clock, 1)
    clock.now -= 5_000  # NTP stepped the clock back
    early = frame(marks, clock, 1)
    marks.acked(late, True, "t", 0, 0)
    assert marks.snapshot().watermark == early - 1


def test_offsets_only_of_tracked_topics_and_untracked_messages_do_not_settle() -> None:
    clock = Clock()
    marks = ReceiveMarks(track=lambda topic: topic.startswith("kis.h"), clock=clock)
    at = frame(marks, clock, 1)
    marks.acked(at, False, "kis.status", 0, 9)  # a status event at the same time: no hold
    mark = marks.snapshot()
    assert mark.watermark == at - 1 and mark.offsets == {}
    marks.acked(at, True, "kis.h0stasp0", 2, 0)
    assert marks.snapshot().offsets == {("kis.h0stasp0", 2): 1}


def test_publisher_sends_on_change_at_most_every_interval_and_a_heartbeat_otherwise() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    sent: list[tuple[bytes, bytes]] = []
    wall = [100.0]
    spooling = [False]
    publisher = MarkPublisher(
        marks,
        lambda key, value: sent.append((key, value)),
        header=b"\x00\x00\x00\x00\x07",
        producer="host:1:abcd",
        interval_s=0.02,
        heartbeat_s=1.0,
        paused=lambda: spooling[0],
        monotonic=lambda: wall[0],
    )
    assert publisher.maybe_publish() and len(sent) == 1
    at = frame(marks, clock, 1)
    marks.acked(at, True, "kis.h0stasp0", 0, 41)
    assert not publisher.maybe_publish()  # changed, but within the interval
    wall[0] += 0.021
    clock.tick()
    assert publisher.maybe_publish()
    key, value = sent[-1]
    producer, _, mark = decode_mark(value)
    assert key == b"host:1:abcd" and producer == "host:1:abcd"
    assert mark.watermark >= at and mark.offsets == {("kis.h0stasp0", 0): 42}
    wall[0] += 0.5
    assert not publisher.maybe_publish()  # nothing changed: wait for the heartbeat
    wall[0] += 0.5
    assert publisher.maybe_publish()
    spooling[0] = True
    wall[0] += 5
    assert not publisher.maybe_publish()  # records on disk are not in the offsets


def test_publisher_survives_a_marks_topic_unknown_for_now_and_publishes_once_it_is_back() -> None:
    """librdkafka refuses a topic it believes missing (a broker restarting) by raising from
    `produce`: that must not end the delivery thread the publisher runs on."""
    marks = ReceiveMarks(clock=Clock())
    sent: list[bytes] = []
    missing = [True]
    wall = [100.0]

    def send(key: bytes, value: bytes) -> None:
        if missing[0]:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))
        sent.append(value)

    publisher = MarkPublisher(
        marks, send, header=b"\x00\x00\x00\x00\x07", producer="host:1:abcd",
        interval_s=0.02, heartbeat_s=1.0, monotonic=lambda: wall[0],
    )  # fmt: skip
    assert not publisher.maybe_publish()
    assert not publisher.maybe_publish(), "retried at once instead of at the next interval"
    missing[0] = False
    wall[0] += 0.021
    assert publisher.maybe_publish() and len(sent) == 1


def test_mark_encoding_round_trips_and_refuses_garbage() -> None:
    mark = Mark(T0, {("kis.h0stasp0", 0): 5, ("kis.h0nxasp0", 2): 0})
    value = b"\x00\x00\x00\x00\x01" + encode_mark("p", T0 + 1, mark)
    assert decode_mark(value) == ("p", T0 + 1, mark)
    for bad in (b"", b"\x01abcdef", b"\x00\x00\x00\x00\x01\xff"):
        try:
            decode_mark(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_a_last_mark_is_published_at_once_when_the_producer_stops_but_not_while_spooling() -> None:
    clock = Clock()
    marks = ReceiveMarks(clock=clock)
    sent: list[bytes] = []
    spooling = [False]
    publisher = MarkPublisher(
        marks, lambda key, value: sent.append(value), header=b"\x00\x00\x00\x00\x07",
        producer="host:1:abcd", interval_s=0.02, heartbeat_s=1.0,
        paused=lambda: spooling[0], monotonic=lambda: 100.0,
    )  # fmt: skip
    assert publisher.maybe_publish()
    at = frame(marks, clock, 1)
    marks.acked(at, True, "kis.h0stasp0", 0, 41)
    assert not publisher.maybe_publish()  # within the interval
    clock.tick()
    assert publisher.publish_final() and len(sent) == 2  # the stop does not wait for it
    assert decode_mark(sent[-1])[2].watermark >= at
    spooling[0] = True
    assert not publisher.publish_final() and len(sent) == 2
