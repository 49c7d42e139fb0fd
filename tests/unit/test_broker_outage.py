"""A failed metadata update holds its waiters for the retry backoff (broker_outage)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.client import AIOKafkaClient

from processors import broker_outage


async def _failed_updates_in(client: AIOKafkaClient, seconds: float) -> int:
    """Like aiokafka's sender while a partition has no leader: ask again as soon as told."""
    sync = asyncio.create_task(client._md_synchronizer())
    updates, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            assert await client.force_metadata_update() is False  # no broker known
            updates += 1
    finally:
        sync.cancel()
    return updates


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", AIOKafkaClient._metadata_update)
    broker_outage.apply()


async def test_a_client_cut_off_from_its_brokers_asks_again_only_after_the_backoff(
    patched: None,
) -> None:
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=100)
    # 0.5 s at 100 ms per failed update: 5, and one more for the update under way at the end.
    assert 1 <= await _failed_updates_in(client, 0.5) <= 6


async def test_unpatched_aiokafka_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fix is for: without it the same loop asks hundreds of times."""
    original = getattr(AIOKafkaClient, "_kis_original_metadata_update", None)
    if original is not None:
        monkeypatch.setattr(AIOKafkaClient, "_metadata_update", original)
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=100)
    assert await _failed_updates_in(client, 0.5) > 50


async def test_applying_twice_wraps_aiokafka_once(patched: None) -> None:
    broker_outage.apply()
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=100)
    assert 1 <= await _failed_updates_in(client, 0.5) <= 6
