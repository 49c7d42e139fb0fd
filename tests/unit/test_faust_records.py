"""`Records` (processors/faust_speed.py): a stateless agent's batch at once, acknowledged as
if each record had gone through `unbatched` and been acknowledged there."""

from __future__ import annotations

from types import SimpleNamespace

from processors.faust_speed import Batch, Records, unbatched
from tests.unit.test_faust_batches import _App, _Event, _messages


def _acks(app: _App, *events: _Event) -> tuple[list[int], list[int]]:
    return list(app.consumer.acked), [event.acks for event in events]


def test_a_plain_event_is_one_record() -> None:
    event = _Event(_App(), b"raw")
    event.message = SimpleNamespace(generation_id=3, offset=7, value=b"raw")
    records = Records(event)
    assert [m.value for m in records] == [b"raw"] and records.taken == 1
    records.ack()
    assert event.acks == 1


def test_a_batch_acknowledges_as_record_by_record_would() -> None:
    by_records, by_events = _App(), _App()
    batch_a = _Event(by_records, Batch(_messages(10, 3)))
    records = Records(batch_a)
    assert [m.offset for m in records] == [10, 11, 12]
    assert _acks(by_records, batch_a) == ([], [0])  # nothing before ack()
    records.ack()
    batch_b = _Event(by_events, Batch(_messages(10, 3)))
    for event in unbatched(batch_b):
        event.ack()
    assert _acks(by_records, batch_a) == _acks(by_events, batch_b) == ([10, 11], [1])


def test_a_batch_cut_short_by_a_rebalance_is_not_acknowledged() -> None:
    app = _App()
    event = _Event(app, Batch(_messages(10, 4)))
    records = Records(event)
    seen = []
    for message in records:
        seen.append(message.offset)
        if message.offset == 11:
            app.consumer_generation_id = 4
    records.ack()
    assert seen == [10, 11] and records.taken == 2
    assert _acks(app, event) == ([], [0])  # read again after the seek


def test_two_agents_on_one_batch_acknowledge_it_once_both_are_done() -> None:
    def shared(app: _App) -> tuple[_Event, _Event]:
        batch = Batch(_messages(10, 3))
        first, second = _Event(app, batch), _Event(app, batch)
        for event in (first, second):
            event.message = SimpleNamespace(generation_id=3, offset=12, refcount=2)
        return first, second

    app = _App()
    one, two = shared(app)
    records = Records(one)
    list(records)
    records.ack()
    assert _acks(app, one, two) == ([], [1, 0])  # the other agent still holds the records
    for event in unbatched(two):
        event.ack()
    assert _acks(app, one, two) == ([10, 11], [1, 1])
    # and the other way round: unbatched first, Records last
    other = _App()
    three, four = shared(other)
    for event in unbatched(three):
        event.ack()
    records = Records(four)
    list(records)
    records.ack()
    assert _acks(other, three, four) == ([10, 11], [1, 1])
