"""Start-up check: drop left-over spool records the broker already holds.

A record in flight when the broker went away may have been appended without its ack ever
coming back; at shutdown it is spooled with the unacknowledged rest, and the next run would
publish it a second time (a new producer id, so idempotence cannot catch it). Every value
embeds a unique envelope (session, seq, index, receive time), so an exact (key, value) match
in the partition tails identifies what was delivered. The broker keeps each partition in
produce order, so what it holds of the spool is the tail of each partition: reading the last
(spooled records of that topic + margin) offsets of every partition is enough. The check is
a one-off before the drain; if it cannot finish, the drain goes ahead (a late duplicate is
better than a producer that will not start).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from producer.spool import Spool, SpoolOffset

log = logging.getLogger(__name__)

_Identity = bytes


def identity(key: bytes | None, value: bytes | None) -> _Identity:
    """A compact digest of the exact bytes (keeps memory low for a large spool)."""
    digest = hashlib.blake2b(digest_size=16)
    if key is None:
        digest.update(b"\x00")
    else:
        digest.update(b"\x01" + len(key).to_bytes(4, "big") + key)
    digest.update(value or b"")
    return digest.digest()


def drop_already_delivered(
    spool: Spool,
    client_config: dict[str, Any],
    *,
    margin: int = 10_000,
    timeout_s: float = 60.0,
) -> int:
    """Discard spooled records found in their topic's partition tails; returns how many."""
    suspects: dict[str, dict[_Identity, list[SpoolOffset]]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    for offset, msg in spool.unread_messages():
        suspects[msg.topic].setdefault(identity(msg.key, msg.value), []).append(offset)
        counts[msg.topic] += 1
    if not suspects:
        return 0
    started = time.monotonic()
    consumer = Consumer(
        {
            **client_config,
            "group.id": "kis-producer-spool-check",  # never joined: assign only, no commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    found: list[SpoolOffset] = []
    try:
        deadline = started + timeout_s
        for topic, by_identity in suspects.items():
            found += _match_tail(consumer, topic, by_identity, counts[topic] + margin, deadline)
    except Exception as exc:  # the check is best effort; the drain must still run
        log.error(
            "could not check the spool against the broker: records it already holds may be "
            "sent again",
            extra={"error": str(exc)},
        )
    finally:
        consumer.close()
    dropped = spool.discard(found)
    log.info(
        "checked the left-over spool against the broker",
        extra={
            "spooled": sum(counts.values()),
            "already_delivered": dropped,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return dropped


def _match_tail(
    consumer: Consumer,
    topic: str,
    by_identity: dict[_Identity, list[SpoolOffset]],
    window: int,
    deadline: float,
) -> list[SpoolOffset]:
    """Offsets of spooled records present in the last `window` messages of each partition."""
    meta = consumer.list_topics(topic, timeout=max(1.0, deadline - time.monotonic()))
    topic_meta = meta.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None:
        return []  # no topic, nothing delivered to it
    assignment: list[TopicPartition] = []
    ends: dict[int, int] = {}
    for partition in topic_meta.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=max(1.0, deadline - time.monotonic())
        )
        start = max(low, high - window)
        if start < high:
            assignment.append(TopicPartition(topic, partition, start))
            ends[partition] = high
    if not assignment:
        return []
    found: list[SpoolOffset] = []
    consumer.assign(assignment)
    try:
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the tail of {topic} took too long")
            for msg in consumer.consume(1000, timeout=0.5):
                partition = msg.partition()
                if partition is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.pop(partition, None)
                        continue
                    raise RuntimeError(error.str())
                offsets = by_identity.get(identity(msg.key(), msg.value()))
                if offsets:
                    found.append(offsets.pop(0))
                offset = msg.offset()
                if offset is not None and offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
    finally:
        consumer.unassign()
    return found
