"""What the producer fault tests' oracle excuses at a dropped connection
(tests/integration/producer_oracle.py `assert_exactly_the_truth`, `lost_tail`).

A dropped connection loses the end of its stream. When the producer reads behind the
simulator, those frames were sent before the producer received its last message, i.e.
before the reported gap starts: by the clock they look lost outside any gap (one CI
failure of the dropped-connections test: 1 record of H0STASP0 000660).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.producer_oracle import (
    CATALOGUE,
    Message,
    assert_exactly_the_truth,
    lost_tail,
    typed,
)

SPEC = CATALOGUE["H0STASP0"]
STREAM = ("H0STASP0", "000660")
VALUES = {"long": "1", "double": "1.5", "time": "090000", "string": "x"}


def _sent(session: int, frame: int, at: int) -> dict[str, Any]:
    row = [VALUES[f.type] for f in SPEC.fields]
    row[SPEC.symbol_index] = "000660"
    row[1] = f"09{frame:04d}"  # (the book's time: each record differs)
    return {"session": session, "frame": frame, "at": at, "tr_id": "H0STASP0", "fields": row}


def _in_kafka(entry: dict[str, Any], received_at: int) -> Message:
    value = {**typed(SPEC, entry["fields"]), "tr_id": "H0STASP0", "extra_fields": None}
    value["received_at"] = received_at
    return Message("t.h0stasp0", 0, entry["frame"], b"000660", value)


# Session 1 sends frames 1..4 at 100, 200, 300, 400 (us); the producer, reading behind, gets
# frames 1 and 2 at 350 and 450, then the connection is dropped: frames 3 and 4 are lost.
# It reports the gap from its last message (450) to the resubscription (900); session 2's
# frame 1 is sent at 1000 and received.
SENT = [_sent(1, 1, 100), _sent(1, 2, 200), _sent(1, 3, 300), _sent(1, 4, 400), _sent(2, 1, 1000)]
GAP = (450, 900)


def test_the_lost_tail_of_a_dropped_connection_is_excused_though_sent_before_the_gap() -> None:
    kafka = [_in_kafka(SENT[0], 350), _in_kafka(SENT[1], 450), _in_kafka(SENT[4], 1010)]
    assert assert_exactly_the_truth({STREAM: SENT}, {STREAM: kafka}, [GAP]) == 3


def test_without_a_gap_reported_after_the_connection_the_tail_is_missing() -> None:
    kafka = [_in_kafka(SENT[0], 350), _in_kafka(SENT[1], 450), _in_kafka(SENT[4], 1010)]
    with pytest.raises(AssertionError, match=r"frame 3 of simulator session 1\) is missing"):
        assert_exactly_the_truth({STREAM: SENT}, {STREAM: kafka}, [])


def test_a_record_missing_before_a_later_one_of_its_connection_is_not_excused() -> None:
    # Frame 2 missing, frame 3 delivered: not a lost tail (TCP delivers a prefix), and sent
    # before the gap: a loss the producer did not report.
    kafka = [_in_kafka(SENT[0], 350), _in_kafka(SENT[2], 450), _in_kafka(SENT[3], 460)]
    kafka.append(_in_kafka(SENT[4], 1010))
    with pytest.raises(AssertionError, match=r"frame 2 of simulator session 1\) is missing"):
        assert_exactly_the_truth({STREAM: SENT}, {STREAM: kafka}, [(460, 900)])


def test_the_gap_must_come_after_the_connections_last_delivered_frame() -> None:
    delivered = {1: (2, 450)}
    assert lost_tail(SENT[2], delivered, [GAP])
    assert not lost_tail(SENT[2], delivered, [(100, 300)])  # (an earlier connection's gap)
    assert not lost_tail(SENT[2], delivered, [(450, 250)])  # (ends before frame 3 was sent)
    assert not lost_tail(SENT[1], delivered, [GAP])  # (frame 2 itself was delivered)
    assert not lost_tail(SENT[2], {}, [GAP])  # (nothing of that connection delivered)
