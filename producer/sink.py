"""The Kafka side: an idempotent producer that never blocks the pipeline and loses nothing.

Messages go straight to librdkafka (idempotent, acks=all, no local timeout: it retries
until the broker is back, in order). Its queue is the bounded memory buffer; when it is
full, `send` switches to the on-disk spool and every later message follows it there, so
order is kept. `pump` feeds the spool back to librdkafka as room appears, and when the
reader has caught up, messages go direct again. Delivery reports acknowledge spooled
records (so a restart never resends them) and time receive-to-ack latency.

On close, whatever the broker has not acknowledged within the flush timeout is purged from
librdkafka and written to a segment placed before the rest of the spool, in produce order
per partition (frames in order; within a frame, librdkafka's in-flight-then-queued order);
the spooled records it duplicates (read back from the spool but not acknowledged) are
acknowledged there, so the spool holds each record once. That alone is not exactly-once:
a purged *in-flight* record may have been appended by the broker with its ack lost, and the
next run's producer id differs, so idempotence cannot drop a resend. The next run therefore
first removes from the left-over spool what the partition tails already hold
(`producer.spool_dedupe`, exact key + value match) before draining it.

librdkafka also gives up on messages for reasons that pass: a broker restarting can answer
that it does not know a topic yet, and librdkafka then fails what it holds for that topic
(and refuses new messages for it for a while). Such a failure is not a refusal: the sink
holds everything new in the spool until librdkafka has reported every message it had, puts
the failed ones back in front of the spool in produce order, and sends on from there.
Only what the broker can never take (too large, not authorised) is set aside, in the
rejected file.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producer.marks import MarkPublisher, ReceiveMarks
from producer.metrics import ProducerMetrics
from producer.spool import Spool, SpoolMessage, SpoolOffset

log = logging.getLogger(__name__)

_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_FOR_NOW = frozenset({
    KafkaError.UNKNOWN_TOPIC_OR_PART,  # a restarting broker, before it has loaded its topics
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._STATE,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_EPOCH,
})  # fmt: skip
"""Failures that pass: the message is sent again, never set aside."""


def failed_for_now(err: KafkaError) -> bool:
    """Whether a failed message should be sent again (else the broker refused it for good)."""
    return err.code() in _FOR_NOW or err.retriable() or err.fatal()


def producer_config(
    base: dict[str, str],
    *,
    compression: str,
    linger_ms: float,
    memory_mb: int,
    memory_messages: int,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 0,  # never give up locally: the spool handles long outages
        "compression.type": compression,
        "linger.ms": linger_ms,
        "batch.num.messages": 10000,
        "queue.buffering.max.kbytes": memory_mb * 1024,
        "queue.buffering.max.messages": memory_messages,
        "reconnect.backoff.max.ms": 2000,
        "socket.nagle.disable": True,  # small produce requests must not wait for ACKs
    }
    config.update(base)
    return config


class KafkaSink:
    """Thread use: `send`/`pump`/`close` from the pipeline thread; reports on a poll thread."""

    def __init__(
        self,
        config: dict[str, Any],
        spool: Spool,
        metrics: ProducerMetrics,
        *,
        rejected_path: Path | None = None,
        on_latency: Callable[[float], None] | None = None,
        on_stats: Callable[[str], None] | None = None,
        marks: ReceiveMarks | None = None,
    ) -> None:
        """``marks``: receive stamps held until acknowledged (producer/marks.py)."""
        if on_stats is not None:  # librdkafka's JSON statistics every second (benchmarks)
            config = {**config, "statistics.interval.ms": 1000, "stats_cb": on_stats}
        self._producer = Producer(
            config, logger=logging.getLogger("librdkafka"), error_cb=self._on_error
        )
        self._spool = spool
        self._metrics = metrics
        self._rejected_path = rejected_path
        self._on_latency = on_latency
        self._marks = marks
        self._publisher: MarkPublisher | None = None
        self._spooling = spool.unread > 0  # a spool left behind is drained before new records
        self._gseq = itertools.count(1)  # produce order, to put back what was not delivered
        self._closing = False
        self._unsent: list[tuple[tuple[int, bool, int], SpoolMessage, SpoolOffset | None]] = []
        """Failed or purged messages to send again, with their produce order."""
        self._unsent_lock = threading.Lock()
        self._held = False
        """A message failed for now: new ones wait in the spool until `_put_back`."""
        self._next_pump = 0.0
        self._next_unknown_log = 0.0
        self._next_checkpoint = 0.0
        self.fatal: KafkaError | None = None
        self._acks = metrics.acks
        self.failed = 0
        self._stop_poll = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kis-delivery", daemon=True)
        self._poller.start()
        if self._spooling:
            log.info("draining the spool left by the previous run", extra={"records": spool.depth})

    # --- producing ---
    def send(self, topic: str, key: bytes | None, value: bytes, received_at: int) -> None:
        """Queue one message; never blocks and never drops (memory, then disk)."""
        self.send_many(topic, [(key, value)], received_at)

    def send_many(
        self, topic: str, messages: list[tuple[bytes | None, bytes]], received_at: int
    ) -> None:
        """`send` for several (key, value) messages of one topic (one frame's records).

        The hot path: one call per frame, one `produce` per message. The delivery callback,
        shared by the frame's messages, carries the frame's produce order and exact receive
        time, which the purge at shutdown needs (librdkafka returns purged messages without
        a timestamp).
        """
        marks = self._marks
        tracked = marks is not None and marks.hold(received_at, len(messages))
        if not self._spooling:
            produce, timestamp = self._producer.produce, received_at // 1000
            callback = partial(self._delivered, next(self._gseq), received_at, None, tracked)
            queued = 0
            try:
                for key, value in messages:
                    produce(topic, value, key, timestamp=timestamp, on_delivery=callback)
                    queued += 1
                return
            except BufferError:
                self._spooling = True
                log.warning(
                    "producer memory full: spooling to disk", extra={"queued": len(self._producer)}
                )
                messages = messages[queued:]
            except KafkaException as exc:  # librdkafka refuses the topic for now, or the message
                self._spooling = True
                messages = messages[queued:]
                key, value = messages[0]
                if self._refused_at_produce(exc, SpoolMessage(topic, key, value, received_at)):
                    messages = messages[1:]
                    if tracked and marks is not None:
                        marks.settle(received_at)
        append = self._spool.append
        for key, value in messages:
            append(SpoolMessage(topic, key, value, received_at))

    def pump(self) -> None:
        """Housekeeping from the pipeline loop: refill librdkafka from the spool, checkpoint."""
        now = time.monotonic()
        if self._held and len(self._producer) == 0:
            put_back = self._put_back()
            log.warning("sending again what the broker failed for now", extra={"records": put_back})
        if self._spooling and not self._held and now >= self._next_pump:
            self._drain_spool(now)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + 1.0
            self._spool.flush()
            self._spool.checkpoint()
            self._metrics.spool_depth.set(self._spool.depth)
            self._metrics.spool_bytes.set(self._spool.size_bytes)
            self._metrics.in_memory.set(len(self._producer))

    def _drain_spool(self, now: float) -> None:
        for _ in range(5000):  # bounded slice so new frames are not starved
            item = self._spool.peek()
            if item is None:
                with self._unsent_lock:
                    if self._held:  # a failure came in meanwhile: `_put_back` first
                        return
                    self._spooling = False
                log.info("spool drained: producing directly again")
                return
            offset, msg = item
            try:
                self._producer.produce(
                    msg.topic,
                    msg.value,
                    msg.key,
                    timestamp=msg.received_at // 1000,
                    on_delivery=partial(
                        self._delivered, next(self._gseq), msg.received_at, offset, True
                    ),
                )
            except BufferError:
                self._next_pump = now + 0.05
                return
            except KafkaException as exc:
                if not self._refused_at_produce(exc, msg):
                    self._next_pump = now + 0.5  # the topic is unknown for now: wait, in order
                    return
                self._spool.ack(offset)
                if self._marks is not None:
                    self._marks.settle(msg.received_at)
            self._spool.advance()

    def _refused_at_produce(self, exc: KafkaException, msg: SpoolMessage) -> bool:
        """`produce` raised: True if the message is refused for good (then set aside), False
        if it is to wait in the spool (a topic librdkafka believes missing, for now)."""
        err = exc.args[0]
        if isinstance(err, KafkaError) and failed_for_now(err):
            now = time.monotonic()
            if now >= self._next_unknown_log:
                self._next_unknown_log = now + 10.0
                log.warning(
                    "producer refuses a topic for now: holding records in the spool",
                    extra={"topic": msg.topic, "error": str(err)},
                )
            return False
        self._refuse(msg, str(err))
        return True

    def _put_back(self) -> int:
        """The failed or purged messages go first in line again; how many.

        Called once librdkafka has reported every message it had (or at close, after the
        purge). Nothing was produced since the first failure (new messages went to the
        spool), so the messages, sorted by produce order, come before all that is unread.
        """
        with self._unsent_lock:
            unsent = sorted(self._unsent, key=lambda item: item[0])
            self._unsent.clear()
            self._spool.prepend([msg for _, msg, _ in unsent])
            for _, _, offset in unsent:
                if offset is not None:
                    self._spool.ack(offset)  # now held, in order, by the prepended segment
            self._held = False
        return len(unsent)

    @property
    def spooling(self) -> bool:
        return self._spooling

    @property
    def spool_depth(self) -> int:
        """Records on disk the broker has not acknowledged."""
        return self._spool.depth

    @property
    def acked(self) -> int:
        return self._acks.acked

    @property
    def in_flight(self) -> int:
        return len(self._producer)

    # --- delivery reports ---
    def produce_raw(self, topic: str, key: bytes, value: bytes) -> None:
        """A message outside the spool and the marks (the marks themselves); BufferError if
        librdkafka's queue is full."""
        self._producer.produce(topic, value, key)

    def publish_marks(self, publisher: MarkPublisher) -> None:
        """Publish receive marks from the delivery thread, right after acknowledgements."""
        self._publisher = publisher

    def _poll_loop(self) -> None:
        poll = self._producer.poll
        while not self._stop_poll.is_set():
            publisher = self._publisher
            if publisher is None:
                poll(0.05)
                continue
            poll(min(0.05, max(0.001, publisher.due_in())))
            if not self._closing:  # (paused while spooling, so while a failure is held)
                try:
                    publisher.maybe_publish()
                except Exception:  # never the end of delivery reports (this thread's job)
                    log.exception("receive marks not published")

    def _delivered(
        self,
        gseq: int,
        received_at: int,
        offset: SpoolOffset | None,
        tracked: bool,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        if err is None:  # the hot path: one call per message
            if offset is not None:
                self._spool.ack(offset)
            marks = self._marks
            if marks is not None:
                at = msg.offset()
                marks.acked(received_at, tracked, msg.topic() or "", msg.partition() or 0,
                            -1 if at is None else at)  # fmt: skip
            latency = time.time() - received_at * 1e-6
            self._acks.observe(latency)
            if self._on_latency is not None:
                self._on_latency(latency)
            return
        topic = msg.topic() or ""
        code = err.code()
        message = SpoolMessage(topic, msg.key(), msg.value() or b"", received_at)
        purged = code in _PURGED
        if purged or failed_for_now(err):
            # Not settled in the receive marks: these go to the spool, to be sent again.
            # Sorted by produce order: frame, then (a frame's messages sharing one gseq)
            # in-flight before queued, then report order, which librdkafka keeps per
            # partition -- so each partition's order is kept exactly.
            queued = code != KafkaError._PURGE_INFLIGHT
            with self._unsent_lock:
                self._unsent.append(((gseq, queued, len(self._unsent)), message, offset))
                first = not purged and not self._held and not self._closing
                if first:
                    self._held = self._spooling = True
            if not purged:
                self._metrics.delivery_resends.labels(topic).inc()
            if first:
                log.warning(
                    "broker failed a message for now: holding new records until it is resent",
                    extra={"topic": topic, "error": err.str()},
                )
            return
        # A permanent refusal (e.g. message too large, topic authorisation): keep the bytes.
        self._refuse(message, err.str())
        if offset is not None:
            self._spool.ack(offset)
        if tracked and self._marks is not None:
            self._marks.settle(received_at)  # refused for good: it will never be appended

    def _refuse(self, msg: SpoolMessage, error: str) -> None:
        self.failed += 1
        self._metrics.delivery_failures.labels(msg.topic).inc()
        log.error("broker refused a message", extra={"topic": msg.topic, "error": error})
        if self._rejected_path is None:
            return
        entry = {
            "topic": msg.topic,
            "key": base64.b64encode(msg.key or b"").decode(),
            "value": base64.b64encode(msg.value).decode(),
            "received_at": msg.received_at,
            "error": error,
        }
        self._rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with self._rejected_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.critical("fatal producer error", extra={"error": err.str()})
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.warning("broker unreachable", extra={"error": err.str()})
        else:
            log.warning("producer error", extra={"error": err.str()})

    # --- shutdown ---
    def close(self, flush_timeout_s: float) -> int:
        """Flush; spool what the broker did not acknowledge in time. Returns records spooled."""
        self._closing = True
        remaining = (
            self._producer.flush(flush_timeout_s) if flush_timeout_s > 0 else len(self._producer)
        )
        if remaining:
            log.warning(
                "broker did not acknowledge everything in time: spooling",
                extra={"remaining": remaining},
            )
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.flush(5)
        self._stop_poll.set()
        self._poller.join(5)
        self._producer.poll(0)
        publisher = self._publisher
        if not remaining and publisher is not None and publisher.publish_final():
            self._producer.flush(min(max(flush_timeout_s, 1.0), 5.0))  # (the mark only)
        spooled = self._put_back()
        self._spool.close()
        self._metrics.spool_depth.set(self._spool.depth)
        return spooled


def raise_if_fatal(sink: KafkaSink) -> None:
    if sink.fatal is not None:
        raise KafkaException(sink.fatal)
