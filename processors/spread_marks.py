"""The producers' receive marks, as the spread join needs them (see producer/marks.py).

A mark of producer P says: every record P received at or before `watermark` is on the
broker, below `next_offset` in each raw partition P wrote. With every live producer's mark
at or past a trigger's receive time, a worker that has read the other venue's partition up
to the largest of their next offsets has seen every quote received before the trigger:
the trigger can be decided now, without a wall-clock settle time.

`ProducerMarks` reads the marks topic on a thread of its own (its own consumer, from the
end, no group commits, like `spread.EndOffsets`: not through Faust, whose fetches are long
polls) and keeps the latest mark per producer. A producer whose marks stop for `timeout_s`
(stopped, crashed, or spooling to disk, when it publishes none) no longer counts; with no
live producer the join falls back to its settle rule.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from processors.broker_outage import LIBRDKAFKA
from producer.marks import Mark, decode_mark

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MarkView:
    """What the live producers' marks say together."""

    watermark: int
    """The lowest watermark: everything received at or before it is on the broker."""
    offsets: dict[tuple[str, int], int]
    """(topic, partition) -> the highest next offset any producer acknowledged there (the
    live ones, and those gone quiet within `memory_s`)."""
    producers: int


class ProducerMarks:
    """The latest mark of each producer instance and whether it is alive (thread-safe)."""

    def __init__(
        self,
        topics: Iterable[str] = (),
        *,
        timeout_s: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``topics``: the raw topics whose offsets matter (others are dropped from views)."""
        self.topics = frozenset(topics)
        self.timeout_s = timeout_s
        self.memory_s = 20 * timeout_s
        """How long a producer gone quiet still counts: its last offsets, and, with none
        live, its last watermark (60 s with the default timeout, as long as the join's
        default maximum wait, the last resort anyway)."""
        self._monotonic = monotonic
        self._latest: dict[str, tuple[float, Mark]] = {}
        self._version = 0
        self._view: MarkView | None = None
        self._view_version = -1
        self._view_expires = float("inf")
        self.received = 0
        self.malformed = 0
        self.on_update: Callable[[], object] | None = None
        """Called (on the reader thread) after each new mark."""

    def update(self, producer: str, mark: Mark) -> None:
        """A mark read (from one thread only: the reader's)."""
        now = self._monotonic()
        offsets = {tp: o for tp, o in mark.offsets.items() if tp[0] in self.topics}
        latest = self._recent(now)
        latest[producer] = (now, Mark(mark.watermark, offsets))
        self._latest = latest  # replaced whole: `view` reads it from another thread
        self._version += 1
        self.received += 1
        if self.on_update is not None:
            self.on_update()

    def _recent(self, now: float) -> dict[str, tuple[float, Mark]]:
        """The latest mark of each producer heard from within `memory_s` (a new dict)."""
        return {p: e for p, e in self._latest.items() if now - e[0] < self.memory_s}

    def view(self) -> MarkView | None:
        """The live producers' marks combined. With none live, those gone quiet within the
        last `memory_s`, by their last marks: a producer cut off from the broker (an
        outage) still holds what it received meanwhile, and its triggers must not be paired
        before that arrives; one that stopped cleanly published a last mark covering all it
        sent. None when there is neither (fall back to settle)."""
        now = self._monotonic()
        if self._version == self._view_version and now < self._view_expires:
            return self._view
        version, latest = self._version, self._recent(now)
        alive = {p: (at, m) for p, (at, m) in latest.items() if now - at < self.timeout_s}
        view = None
        if latest:
            # Offsets also from producers gone quiet recently: their last records may still
            # be unread here, and a live producer's next offset can be below them.
            offsets: dict[tuple[str, int], int] = {}
            for _, mark in latest.values():
                for tp, next_offset in mark.offsets.items():
                    if next_offset > offsets.get(tp, -1):
                        offsets[tp] = next_offset
            counted = alive or latest
            watermark = min(mark.watermark for _, mark in counted.values())
            view = MarkView(watermark, offsets, len(alive))
        self._view, self._view_version = view, version
        expiries = [at + self.timeout_s for at, _ in alive.values()]
        expiries += [at + self.memory_s for at, _ in latest.values()]
        self._view_expires = min(expiries, default=1e300)
        return view


class MarkReader:
    """Reads the marks topic into a `ProducerMarks` on a daemon thread."""

    def __init__(self, client_config: dict[str, str], topic: str, marks: ProducerMarks) -> None:
        """``client_config``: librdkafka properties with the broker and its security settings
        (never logged)."""
        self._config = {
            **client_config,
            "group.id": f"kis-stream-marks-{uuid.uuid4().hex[:8]}",  # never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 1,
            # Back within a second of a broker's return (librdkafka backs off up to 10 s):
            # until then the spread falls back to its settle rule.
            "reconnect.backoff.max.ms": 1000,
        }
        self.topic = topic
        self.marks = marks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spread-marks", daemon=True)

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        if not self.started:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            consumer = Consumer(self._config, logger=LIBRDKAFKA)
        except KafkaException as exc:
            log.warning("receive marks unavailable: %s", type(exc).__name__)
            return
        try:
            while not self._stop.is_set() and not self._assign(consumer):
                self._stop.wait(1.0)
            while not self._stop.is_set():
                message = consumer.poll(0.1)
                if message is None or message.error():
                    continue
                try:
                    producer, _, mark = decode_mark(message.value() or b"")
                except ValueError:
                    self.marks.malformed += 1
                    continue
                self.marks.update(producer, mark)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> bool:
        """Read every partition of the topic from its end, once it exists."""
        try:
            meta = consumer.list_topics(self.topic, timeout=2).topics.get(self.topic)
        except KafkaException:
            return False
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in meta.partitions])
        return True
