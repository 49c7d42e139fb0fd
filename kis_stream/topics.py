"""Topic names (contract): shared by the producer, the processors and the tools."""

from __future__ import annotations

FRAMES = "kis.frames"
DEAD_LETTER = "kis.dead-letter"
STATUS = "kis.status"
PRODUCER_MARKS = "kis.producer.marks"
"""Receive marks of the producer instances (producer/marks.py; one partition)."""

BARS_1S = "kis.bars.1s"
BOOK_IMBALANCE = "kis.book.imbalance"
PROGRAM_NETBUY = "kis.program.netbuy"
SPREAD_KRX_NXT = "kis.spread.krx_nxt"

DERIVED = (BARS_1S, BOOK_IMBALANCE, PROGRAM_NETBUY, SPREAD_KRX_NXT)


def raw_topic(tr_id: str, prefix: str = "kis.") -> str:
    """The per-TR raw topic: `kis.<tr_id lowercase>` (e.g. `kis.h0stcnt0`)."""
    return prefix + tr_id.lower()


def marks_topic(prefix: str = "kis.") -> str:
    """The receive-marks topic under a topic prefix (`kis.producer.marks`)."""
    return prefix + PRODUCER_MARKS.removeprefix("kis.")


def subject(topic: str) -> str:
    """Schema-registry subject under TopicNameStrategy."""
    return topic + "-value"
