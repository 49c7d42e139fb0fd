"""What a worker does while its broker is down: retry at a measured pace, say so once.

aiokafka 0.14's client updates metadata whenever someone asks (`force_metadata_update`) and
resolves the waiters as soon as the update fails. Its producer's sender asks again at once
while a partition has no known leader, so with the broker down the update, its failed
connect and two error lines ran in a loop: a worker logged about 2,500 lines a second and
kept a core busy through a broker outage (tests/e2e/test_processors_outage.py). Here a
failed update holds its waiters for the client's retry backoff (100 ms by default) before
they hear of the failure; a successful one is unchanged.

Even paced, the clients' connection errors (aiokafka's, and librdkafka's from the worker's
own consumers: receive marks, end offsets) came to about 100 lines a second;
`quiet_client_logs` lets each kind through once per 10 s, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kis_stream.logging import RepeatFilter, quiet_repeats

LIBRDKAFKA = logging.getLogger("processors.librdkafka")
"""The logger the worker's own librdkafka clients write to (pass as `logger=`)."""

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


def quiet_client_logs(window_s: float = 10.0) -> RepeatFilter:
    """Each kind of aiokafka and librdkafka log line at most once per `window_s`."""
    import aiokafka  # noqa: F401 (its modules, and so their loggers, exist from here on)

    loggers = logging.Logger.manager.loggerDict
    names = [n for n, v in loggers.items() if isinstance(v, logging.Logger)]
    aiokafka_names = [n for n in names if n == "aiokafka" or n.startswith("aiokafka.")]
    return quiet_repeats([*aiokafka_names, LIBRDKAFKA.name], window_s)
