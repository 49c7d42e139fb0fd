"""The writer schemas of a batch's records, fetched before the agents decode them.

The raw records name their writer schema by id (Confluent wire format); a worker fetches a
schema from the registry the first time it meets its id: at start-up, after a restart, when
the producer registered a new version. Fetched by the decoder, in the middle of an agent's
step, a registry that did not answer made the record "undecodable": skipped, acknowledged,
lost from the derived streams for good. Here an unknown id is fetched first, off the event
loop; while the registry does not answer, the agent waits (its records unacknowledged, so
nothing is committed past them) and the worker keeps running. Only an id the registry says
it does not have (404) goes on to the decoder, which skips its records as undecodable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

log = logging.getLogger("processors.schemas")

MAGIC = 0
REMIND_S = 30.0


def _not_found(exc: Exception) -> bool:
    return isinstance(exc, SchemaRegistryError) and exc.http_status_code == 404


class SchemaWait:
    """Schema ids known to the registry client's cache, and the wait for the others."""

    def __init__(
        self, registry: SchemaRegistryClient, backoff_s: float = 0.5, max_backoff_s: float = 10.0
    ) -> None:
        self.registry = registry
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._known: set[bytes] = set()
        """The 4 id bytes of the wire format, of every schema fetched (or found missing)."""
        self.waited_s = 0.0
        """Time spent waiting for the registry so far (shown by the views)."""
        self.waiting_since: float | None = None
        """Since when at least one agent has been waiting for the registry."""
        self.fetching = 0
        """Fetches under way (agents waiting for a schema)."""
        self._failing = 0
        """Fetches that found the registry unavailable and are still waiting for it."""

    def state(self) -> dict[str, float | None]:
        """For the views: how long the agents have been waiting now, and in all."""
        since = self.waiting_since
        waiting = None if since is None else round(time.monotonic() - since, 3)
        return {"waiting_for_s": waiting, "waited_s": round(self.waited_s, 3)}

    async def ready(self, messages: Iterable[Any]) -> None:
        """Returns once the writer schema of every message's value is in the client's cache,
        or known to be missing from the registry."""
        known = self._known
        for message in messages:
            value = message.value
            if value is None or len(value) < 5 or value[0] != MAGIC:
                continue  # (not the wire format: the decoder says so)
            header = value[1:5]
            if header not in known:
                self.fetching += 1
                try:
                    await self._fetch(header, message.topic)
                finally:
                    self.fetching -= 1

    async def _fetch(self, header: bytes, topic: str) -> None:
        schema_id = int.from_bytes(header, "big")
        delay, started, reminded, failed = self.backoff_s, time.monotonic(), -REMIND_S, False
        try:
            while True:
                try:
                    await asyncio.to_thread(self.registry.get_schema, schema_id)
                    break
                except Exception as exc:  # the client's errors are not one class
                    if _not_found(exc):
                        break
                    now = time.monotonic()
                    if not failed:
                        failed = True
                        self._failing += 1
                        if self.waiting_since is None:
                            self.waiting_since = now
                    if now - reminded >= REMIND_S:
                        log.warning(
                            "schema registry unavailable (%s: %s): the records of %s wait for "
                            "writer schema %d, unacknowledged, for %.0f s now; nothing is "
                            "skipped", type(exc).__name__, exc, topic, schema_id, now - started,
                        )  # fmt: skip
                        reminded = now
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
        finally:
            if failed:
                self._failing -= 1
                if not self._failing and self.waiting_since is not None:  # the last one waiting
                    waited = time.monotonic() - self.waiting_since
                    self.waited_s += waited
                    self.waiting_since = None
                    log.warning("schema registry answers again after %.1f s: records go on", waited)
        self._known.add(header)
