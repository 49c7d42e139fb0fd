"""The spread join with the producers' receive marks (processors/spread_marks.py).

The race of issue 6 (one CI run): an NXT quote received 15 ms before a KRX trigger reached
the broker after the trigger's partition had been read to its end; after the settle time
the trigger was decided "no nxt quote before the trigger". With marks the trigger waits
until the producer says everything received up to it is on the broker and the NXT
partition has been read that far, then pairs with that quote.
"""

from __future__ import annotations

from typing import Any

from processors.inputs import Book, book_from
from processors.spread import SpreadJoin, SpreadOutcome
from processors.spread_marks import MarkView, ProducerMarks
from producer.marks import Mark

KRX_TOPIC, NXT_TOPIC = "kis.h0stasp0", "kis.h0nxasp0"
TOPICS = {"KRX": KRX_TOPIC, "NXT": NXT_TOPIC}
MS = 1_000


def book(venue: str, bid: int, received_at: int) -> Book:
    result = book_from(
        {
            "symbol": "005930",
            "venue": venue,
            "received_at": received_at,
            "event_time": received_at // 1000,
            "bidp1": bid,
            "askp1": bid + 100,
            "bidp_rsqn1": 10,
            "askp_rsqn1": 10,
        }
    )
    assert isinstance(result, Book)
    return result


class Worker:
    """A SpreadJoin fed by hand: inputs, release-timer calls, the marks it sees."""

    def __init__(self, *, marks: bool) -> None:
        self.view: MarkView | None = None
        self.join = SpreadJoin(
            {},
            max_age_ms=5_000,
            max_wait_s=60,
            settle_s=1.0,
            marks=(lambda: self.view) if marks else None,
            venue_topics=TOPICS,
        )
        self.decided: list[tuple[Any, SpreadOutcome]] = []

    def read(self, b: Book, offset: int, wall: float) -> None:
        token = (b.venue, b.received_at)
        self.decided += self.join.on_book(b, offset=offset, partition=0, wall=wall, token=token)

    def timer(self, wall: float, ends: dict[tuple[int, str], int]) -> None:
        """The release timer: end offsets read for what `waiting` asks (as the agent does)."""
        wanted = self.join.waiting(wall)
        self.decided += self.join.expire(wall, {k: v for k, v in ends.items() if k in wanted})

    def outcome(self, token: tuple[str, int]) -> SpreadOutcome:
        return next(o for t, o in self.decided if t == token)


def race(worker: Worker) -> SpreadOutcome:
    """NXT@100 ms is received before KRX@115 ms but appended after it (another produce
    request); the worker reads KRX@115, finds NXT read to its end, waits past the settle
    time; only then does NXT@100 arrive. Returns the KRX trigger's outcome."""
    t0 = 1_800_000_000_000_000
    worker.read(book("NXT", 70_000, t0 + 50 * MS), offset=0, wall=0.0)
    # The producer: NXT@100 is stamped and queued, not acknowledged; KRX@115 is acknowledged.
    worker.view = MarkView(t0 + 100 * MS - 1, {(KRX_TOPIC, 0): 1, (NXT_TOPIC, 0): 1}, 1)
    worker.read(book("KRX", 70_500, t0 + 115 * MS), offset=0, wall=0.0)
    worker.timer(1.5, ends={(0, "NXT"): 1, (0, "KRX"): 1})  # NXT at its end, settle passed
    # NXT@100 is acknowledged at offset 1; the mark covers the trigger and says so.
    worker.view = MarkView(t0 + 120 * MS, {(KRX_TOPIC, 0): 1, (NXT_TOPIC, 0): 2}, 1)
    worker.timer(1.6, ends={(0, "NXT"): 2, (0, "KRX"): 1})
    krx = ("KRX", t0 + 115 * MS)
    if not any(t == krx for t, _ in worker.decided):  # still held: NXT offset 1 not read yet
        worker.read(book("NXT", 70_600, t0 + 100 * MS), offset=1, wall=1.7)
        worker.timer(1.7, ends={(0, "NXT"): 2, (0, "KRX"): 1})
    return worker.outcome(krx)


def test_with_marks_a_trigger_waits_for_the_quote_received_before_it_and_pairs_with_it() -> None:
    outcome = race(Worker(marks=True))
    assert outcome.record is not None, outcome.reason
    assert outcome.record["nxt_received_at"] == 1_800_000_000_000_000 + 100 * MS
    assert outcome.record["nxt_bid"] == 70_600


def test_the_settle_rule_alone_pairs_the_trigger_with_an_older_quote() -> None:
    """The defect the marks fix: read to its end after the settle time is not "complete"."""
    outcome = race(Worker(marks=False))
    assert outcome.record is not None
    assert outcome.record["nxt_received_at"] == 1_800_000_000_000_000 + 50 * MS  # not 100


def test_with_marks_a_trigger_is_decided_without_waiting_for_the_settle_time() -> None:
    worker = Worker(marks=True)
    t0 = 1_800_000_000_000_000
    worker.read(book("NXT", 70_000, t0), offset=0, wall=0.0)
    worker.view = MarkView(t0 + 10 * MS, {(KRX_TOPIC, 0): 1, (NXT_TOPIC, 0): 1}, 1)
    worker.read(book("KRX", 70_500, t0 + 10 * MS), offset=0, wall=0.001)
    assert worker.outcome(("KRX", t0 + 10 * MS)).record is not None  # at once


def test_a_partition_no_live_producer_wrote_is_read_to_its_end_offset_after_the_mark() -> None:
    worker = Worker(marks=True)
    t0 = 1_800_000_000_000_000
    worker.read(book("NXT", 70_000, t0), offset=4, wall=0.0)  # written by an earlier producer
    worker.view = MarkView(t0 + 10 * MS, {(KRX_TOPIC, 0): 1}, 1)
    worker.read(book("KRX", 70_500, t0 + 10 * MS), offset=0, wall=0.001)
    assert worker.join.waiting(0.002) == {(0, "NXT")}  # covered: ask the broker's end offset
    worker.timer(0.002, ends={(0, "NXT"): 6})  # one more NXT record the worker has not read
    assert worker.decided == [(("NXT", t0), worker.decided[0][1])]
    worker.read(book("NXT", 70_100, t0 + 5 * MS), offset=5, wall=0.003)
    worker.timer(0.004, ends={(0, "NXT"): 6})
    assert worker.outcome(("KRX", t0 + 10 * MS)).record["nxt_bid"] == 70_100  # type: ignore[index]


def test_every_live_producer_must_cover_the_trigger() -> None:
    now = [0.0]
    marks = ProducerMarks([KRX_TOPIC, NXT_TOPIC], timeout_s=3.0, monotonic=lambda: now[0])
    t0 = 1_800_000_000_000_000
    marks.update("a", Mark(t0 + 50, {(NXT_TOPIC, 0): 7, ("kis.frames", 0): 99}))
    marks.update("b", Mark(t0 + 20, {(NXT_TOPIC, 0): 9, (KRX_TOPIC, 1): 3}))
    view = marks.view()
    assert view == MarkView(t0 + 20, {(NXT_TOPIC, 0): 9, (KRX_TOPIC, 1): 3}, 2)
    now[0] = 2.0
    marks.update("a", Mark(t0 + 60, {(NXT_TOPIC, 0): 8}))
    now[0] = 3.5  # b has gone quiet (stopped, or spooling): its watermark no longer counts,
    # but what it wrote last may still be unread here
    assert marks.view() == MarkView(t0 + 60, {(NXT_TOPIC, 0): 9, (KRX_TOPIC, 1): 3}, 1)
    now[0] = 10.0  # none live: the ones gone quiet in the last 60 s, by their last
    # marks (cut off from the broker, they still hold what they received meanwhile)
    assert marks.view() == MarkView(t0 + 20, {(NXT_TOPIC, 0): 9, (KRX_TOPIC, 1): 3}, 0)
    now[0] = 2.0 + 60.0
    assert marks.view() is None  # none for 60 s: the settle rule applies


def test_a_producer_cut_off_from_the_broker_holds_its_triggers_until_its_marks_return() -> None:
    """A broker outage: the producer's marks stop reaching the worker while it keeps
    receiving; what it received is delivered later, the other venue's possibly after the
    trigger. The settle rule would pair the trigger with an older quote (e2e, session 8)."""
    now = [0.0]
    marks = ProducerMarks([KRX_TOPIC, NXT_TOPIC], timeout_s=3.0, monotonic=lambda: now[0])
    worker = Worker(marks=True)
    worker.join.marks = marks.view
    t0 = 1_800_000_000_000_000
    marks.update("p", Mark(t0, {(KRX_TOPIC, 0): 0, (NXT_TOPIC, 0): 1}))
    worker.read(book("NXT", 70_000, t0), offset=0, wall=0.0)
    now[0] = 20.0  # the outage: no marks for 20 s; then the KRX backlog comes first
    worker.read(book("KRX", 70_500, t0 + 15 * 10**6), offset=0, wall=20.0)
    worker.timer(25.0, ends={(0, "NXT"): 1})  # NXT read to its end, settle time long past
    krx = ("KRX", t0 + 15 * 10**6)
    assert all(token != krx for token, _ in worker.decided)
    worker.read(book("NXT", 70_900, t0 + 14 * 10**6), offset=1, wall=25.1)  # NXT's backlog
    now[0] = 25.2
    marks.update("p", Mark(t0 + 16 * 10**6, {(KRX_TOPIC, 0): 1, (NXT_TOPIC, 0): 2}))
    worker.timer(25.2, ends={(0, "NXT"): 2})
    assert worker.outcome(krx).record["nxt_bid"] == 70_900  # type: ignore[index]


def test_without_live_marks_the_settle_rule_still_applies() -> None:
    worker = Worker(marks=True)  # marks enabled, but no producer publishes any
    t0 = 1_800_000_000_000_000
    worker.read(book("NXT", 70_000, t0), offset=0, wall=0.0)
    worker.read(book("KRX", 70_500, t0 + 10 * MS), offset=0, wall=0.0)
    worker.timer(0.5, ends={(0, "NXT"): 1})
    assert len(worker.decided) == 1  # NXT@t0 only (released by the KRX watermark)
    worker.timer(1.0, ends={(0, "NXT"): 1})
    assert worker.outcome(("KRX", t0 + 10 * MS)).record is not None


def test_the_marks_are_asked_once_per_wall_time() -> None:
    """The agent joins a delivered batch at one wall time: one look at the marks for all of
    it (a mark, once made, stays true; a later one only releases more)."""
    asked: list[int] = []
    t0 = 1_800_000_000_000_000

    def marks() -> MarkView:
        asked.append(1)
        return MarkView(t0, {}, 1)

    join = SpreadJoin({}, max_age_ms=5_000, marks=marks, venue_topics={"KRX": KRX_TOPIC})
    for i in range(5):  # held: the other venue is not read past them, the marks do not cover
        join.on_book(book("KRX", 70_000, t0 + (i + 1) * MS), offset=i, partition=0, wall=1.0)
    assert len(asked) == 1
    join.on_book(book("KRX", 70_000, t0 + 9 * MS), offset=9, partition=0, wall=1.5)
    assert len(asked) == 2
