"""How long a fetch waits at the broker for data: Faust hard-codes 1,500 ms.

aiokafka keeps one fetch request in flight per broker, built from the partitions that have
nothing buffered at that moment; a partition whose records were taken while a request
without it is waiting at the broker is fetched again only when that request returns, after
up to `fetch_max_wait_ms`. With the spread's two topics, whose partitions take turns, this
held one venue's partition back for up to 1.5 s while the other's triggers waited for it
(the sawtooth of up to 2 s in the spread's latency, docs/benchmarks.md "Process"). A
shorter wait costs an empty fetch per broker and wait when a worker is idle.
"""

from __future__ import annotations

from typing import Any

_ORIGINAL = "_kis_original_create_worker_consumer"


def apply(fetch_max_wait_ms: int) -> None:
    """Make Faust's worker consumer wait at most `fetch_max_wait_ms` per fetch."""
    from faust.transport.drivers import aiokafka as driver

    cls: Any = driver.AIOKafkaConsumerThread
    original = getattr(cls, _ORIGINAL, None)
    if original is None:
        original = cls._create_worker_consumer
        setattr(cls, _ORIGINAL, original)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts
        return consumer

    cls._create_worker_consumer = create_worker_consumer
