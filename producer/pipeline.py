"""The pipeline thread: raw frame -> kis.frames, decode -> Avro -> per-TR topic or dead letter.

Sessions only read sockets; everything they read lands on one in-memory queue consumed
here, in arrival order. The queue is bounded (`max_backlog` frames): when it is full, the
session that wants to add a frame waits for room instead of reading on, so the data stays
in the kernel's socket buffers and then on the server (TCP backpressure) -- nothing is
dropped, memory stays bounded, and the wait is counted (`kis_session_backpressure_seconds`).
It only fills when decoding falls behind the feed for tens of thousands of frames; the sink
never blocks (it spools to disk), so a broker outage does not fill it.

The raw frame is published first (it is the source of truth that `kis-stream redecode`
rebuilds from), then its records. A subscribe acknowledgement that carries an AES key
re-keys that session's decoder before any later frame of the same connection is decoded,
because both travel through the same queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from producer.catalogue import Catalogue
from producer.codec import Codec
from producer.frames import FrameDecoder, reason_code
from producer.frames_topic import frame_key, frame_tr_id
from producer.marks import ReceiveMarks
from producer.metrics import ProducerMetrics
from producer.record_file import FrameRecorder
from producer.records import DecodeError
from producer.session import FrameItem
from producer.sink import KafkaSink
from producer.status import StatusEvent
from producer.system import SubscribeAck, parse_system

log = logging.getLogger(__name__)

_STOP = object()
_BATCH = 512


@dataclass(slots=True)
class PipelineCounts:
    frames: int = 0
    records: int = 0
    dead_letters: int = 0
    status_events: int = 0


class Pipeline:
    def __init__(
        self,
        *,
        sink: KafkaSink,
        codec: Codec,
        metrics: ProducerMetrics,
        catalogue: Catalogue,
        recorder: FrameRecorder | None = None,
        decoder_factory: Callable[[], FrameDecoder] | None = None,
        max_backlog: int = 20_000,
        on_pickup: Callable[[int], None] | None = None,
        marks: ReceiveMarks | None = None,
    ) -> None:
        self._sink = sink
        self._codec = codec
        self._metrics = metrics
        self._catalogue = catalogue
        self._recorder = recorder
        self._decoder_factory = decoder_factory or (lambda: FrameDecoder(catalogue))
        self._decoders: dict[str, FrameDecoder] = {}
        self._per_tr: dict[str | None, list[int]] = {}
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._max_backlog = max_backlog
        self._on_pickup = on_pickup
        """Called with each data frame's receive time as handling starts (benchmarks)."""
        self._marks = marks
        """Receive stamps (the sessions' `ReceiveMarks.stamp`): the frame's hold is released
        once its messages are handed to the sink, which holds the stamp per message."""
        self._room = threading.Event()
        self._room.set()
        self._thread = threading.Thread(target=self._run, name="kis-pipeline", daemon=True)
        self.counts = PipelineCounts()
        self.error: BaseException | None = None

    # --- producers of work (session threads) ---
    def submit_frame(self, item: FrameItem) -> None:
        """Queue a frame; blocks the calling session while the backlog is full."""
        if self._queue.qsize() >= self._max_backlog:
            self._wait_for_room()
        self._queue.put(item)

    def submit_status(self, event: StatusEvent) -> None:
        self._queue.put(event)  # never blocks: few, and the gaps they report must not wait

    def _wait_for_room(self) -> None:
        started = time.monotonic()
        qsize, alive = self._queue.qsize, self._thread.is_alive
        while qsize() >= self._max_backlog and alive():  # a dead pipeline is /healthz's job
            self._room.clear()
            if qsize() < self._max_backlog:
                break
            self._room.wait(0.1)
        self._metrics.backpressure.inc(time.monotonic() - started)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- lifecycle ---
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Process everything already queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        try:
            while True:
                try:
                    item = get(timeout=0.05)
                except queue.Empty:
                    self._tick(idle=True)
                    continue
                for _ in range(_BATCH):
                    if item is _STOP:
                        self._tick(idle=True)
                        return
                    self._handle(item)
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break
                else:  # a full batch: the item fetched last is still to be handled
                    if item is _STOP:
                        self._queue.put(_STOP)
                    else:
                        self._handle(item)
                self._tick(idle=False)
        except BaseException as exc:  # a bug here must be visible to /healthz, not silent
            self.error = exc
            log.critical("pipeline stopped by an unexpected error", exc_info=True)
            raise

    def _tick(self, *, idle: bool) -> None:
        self._sink.pump()
        backlog = self._queue.qsize()
        self._metrics.pipeline_backlog.set(backlog)
        if not self._room.is_set() and backlog < self._max_backlog:
            self._room.set()
        if idle and self._recorder is not None:
            self._recorder.flush()

    def _handle(self, item: object) -> None:
        if isinstance(item, tuple):
            self.handle_frame(item)
            if self._marks is not None:
                self._marks.settle(item[2])
        elif isinstance(item, StatusEvent):
            self.handle_status(item)

    # --- the work ---
    def handle_frame(self, item: FrameItem) -> None:
        conn_id, seq, received_at, raw = item
        if self._on_pickup is not None:
            self._on_pickup(received_at)
        self.counts.frames += 1
        if self._recorder is not None:
            self._recorder.write(received_at, raw)
        tr_id = frame_tr_id(raw)
        # Plain frames by symbol; everything else (acknowledgements, encrypted notices) by the
        # session slot, so that a slot's keys and its encrypted frames keep their order across
        # reconnects in one partition -- what redecode needs.
        key = frame_key(raw, tr_id) or conn_id.partition(".")[0].encode()
        self._sink.send(
            self._codec.topics.frames,
            key,
            self._codec.frame(raw, received_at, conn_id, seq, tr_id),
            received_at,
        )
        decoder = self._decoder_for(conn_id)
        if raw[:1] == b"{":
            message = parse_system(raw)
            if isinstance(message, SubscribeAck) and message.key and message.iv:
                decoder.set_key(message.tr_id, message.key, message.iv)
            return
        counts = self._per_tr.get(tr_id)
        if counts is None:  # bounded: tr_id comes off the wire
            known = tr_id is not None and len(self._per_tr) < 1000
            counts = self._metrics.per_tr.slot(tr_id if known and tr_id else "unknown")
            if known:
                self._per_tr[tr_id] = counts
        counts[0] += 1
        result = decoder.decode(raw, received_at=received_at, session=conn_id, seq=seq)
        if isinstance(result, DecodeError):
            self._dead_letter(result, received_at)
            return
        encode = self._codec.record
        topic = ""
        messages: list[tuple[bytes | None, bytes]] = []
        append = messages.append
        try:  # encode the whole frame first: a frame is published whole or dead-lettered
            for record in result:  # one frame, one TR: one topic
                topic, value = encode(record)
                append((record.symbol.encode(), value))
        except Exception as exc:  # a record the schema cannot take: keep the frame, go on
            reason = f"internal: cannot encode: {type(exc).__name__}: {exc}"
            self._dead_letter(
                DecodeError(reason, raw, tr_id, received_at, conn_id, seq), received_at
            )
            return
        if messages:
            self._sink.send_many(topic, messages, received_at)
        self.counts.records += len(result)
        counts[1] += len(result)
        if decoder.drift:
            self._count_drift(decoder)

    def _dead_letter(self, error: DecodeError, received_at: int) -> None:
        self.counts.dead_letters += 1
        self._metrics.decode_errors.labels(error.tr_id or "unknown").inc()
        log.warning(
            "undecodable frame to the dead-letter topic",
            extra={"reason": error.reason[:200], "code": reason_code(error.reason),
                   "session": error.session, "seq": error.seq},
        )  # fmt: skip
        key = (error.tr_id or "").encode() or None
        self._sink.send(
            self._codec.topics.dead_letter, key, self._codec.dead_letter(error), received_at
        )

    def _count_drift(self, decoder: FrameDecoder) -> None:
        for (tr_id, _width), count in decoder.drift.items():
            self._metrics.drift.labels(tr_id).inc(count)
        decoder.drift.clear()

    def handle_status(self, event: StatusEvent) -> None:
        self.counts.status_events += 1
        if event.event == "gap":
            self._metrics.gaps.labels(event.session).inc()
        level = logging.DEBUG if event.event == "subscribed" else logging.INFO
        log.log(
            level, "session %s", event.event,
            extra={k: v for k, v in event.as_dict().items() if v is not None and k != "event"},
        )  # fmt: skip
        self._sink.send(
            self._codec.topics.status, event.session.encode(), self._codec.status(event), event.at
        )

    def _decoder_for(self, conn_id: str) -> FrameDecoder:
        # One decoder per connection: AES keys belong to the connection that acknowledged them.
        decoder = self._decoders.get(conn_id)
        if decoder is None:
            slot = conn_id.split(".", 1)[0]
            for old in [c for c in self._decoders if c.split(".", 1)[0] == slot]:
                del self._decoders[old]  # its frames were all handled before this one
            decoder = self._decoders[conn_id] = self._decoder_factory()
        return decoder
