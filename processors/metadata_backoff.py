"""A failed metadata update is retried after `retry_backoff_ms`, not at once.

aiokafka 0.14's client updates metadata whenever someone asks (`force_metadata_update`) and
resolves the waiters as soon as the update fails. Its producer's sender asks again at once
while a partition has no known leader, so with the broker down the update, its failed
connect and two error lines ran in a loop: a worker logged about 2,500 lines a second and
kept a core busy through a broker outage (tests/e2e/test_processors_outage.py). Here a
failed update holds its waiters for the client's retry backoff (100 ms by default) before
they hear of the failure; a successful one is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

_ORIGINAL = "_kis_original_metadata_update"


def apply() -> None:
    """Make every aiokafka client wait its retry backoff after a failed metadata update."""
    from aiokafka.client import AIOKafkaClient

    cls: Any = AIOKafkaClient
    original = getattr(cls, _ORIGINAL, None)
    if original is None:
        original = cls._metadata_update
        setattr(cls, _ORIGINAL, original)

    async def metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
        updated: bool = await original(self, cluster_metadata, topics)
        if not updated:
            await asyncio.sleep(self._retry_backoff)
        return updated

    cls._metadata_update = metadata_update
