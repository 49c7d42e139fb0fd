"""Batch delivery (processors/faust_speed.py): a batch's records, and when it is acknowledged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from processors.faust_speed import Batch, Delivered, batch_message, ends_batch, unbatched

TOPIC = "kis.h0stasp0"


class _Consumer:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> None:
        self.acked.append(message.offset)


class _App:
    def __init__(self) -> None:
        self.consumer_generation_id = 3
        self.consumer = _Consumer()


class _Event:
    """What `unbatched` reads of a Faust event, recording its acknowledgement."""

    def __init__(self, app: _App, value: Any, generation: int = 3) -> None:
        self.app = app
        self.value = value
        self.message = SimpleNamespace(generation_id=generation, offset=-1)
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1


def _messages(first: int, count: int) -> list[Any]:
    return [
        SimpleNamespace(
            topic=TOPIC,
            partition=1,
            offset=offset,
            timestamp=1.5,
            timestamp_type=0,
            value=b"v%d" % offset,
            serialized_value_size=3,
            generation_id=3,
        )
        for offset in range(first, first + count)
    ]


def test_a_plain_event_is_delivered_as_it_is() -> None:
    event = _Event(_App(), b"raw")
    assert list(unbatched(event)) == [event]
    assert ends_batch(event)


def test_a_batch_gives_its_records_in_offset_order() -> None:
    event = _Event(_App(), Batch(_messages(10, 3)))
    records = list(unbatched(event))
    assert [r.message.offset for r in records] == [10, 11, 12]
    assert [r.value for r in records] == [b"v10", b"v11", b"v12"]
    assert [ends_batch(r) for r in records] == [False, False, True]


def test_the_batch_is_acknowledged_once_every_record_is() -> None:
    app = _App()
    event = _Event(app, Batch(_messages(10, 3)))
    records = list(unbatched(event))
    records[2].ack()
    records[0].ack()
    records[0].ack()  # twice: counted once
    assert event.acks == 0 and app.consumer.acked == []
    records[1].ack()
    # Offsets 10 and 11 through the consumer, 12 (the batch message's own) with the event.
    assert app.consumer.acked == [10, 11]
    assert event.acks == 1


def test_a_batch_stops_when_the_generation_changes() -> None:
    app = _App()
    event = _Event(app, Batch(_messages(10, 4)))
    seen = []
    for record in unbatched(event):
        seen.append(record.message.offset)
        if record.message.offset == 11:
            app.consumer_generation_id = 4  # a rebalance while the agent works on 11
            assert ends_batch(record)  # state buffered for the batch is written now
        record.ack()
    assert seen == [10, 11]
    assert event.acks == 0 and app.consumer.acked == []  # read again after the seek


def test_the_batch_message_stands_for_the_last_record() -> None:
    messages = _messages(20, 5)
    message = batch_message(TP(TOPIC, 1), messages)
    assert (message.topic, message.partition, message.offset) == (TOPIC, 1, 24)
    assert message.tp == TP(TOPIC, 1)
    assert message.generation_id == 3
    assert isinstance(message.value, Batch) and message.value.messages == messages
    assert isinstance(next(unbatched(_Event(_App(), message.value))), Delivered)
