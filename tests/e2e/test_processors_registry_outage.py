"""End to end through a schema registry outage: a worker meets records whose writer schema
it has not fetched yet while the registry does not answer.

The worker reaches the (real) registry through a proxy that the test cuts. Records of a new
schema arrive meanwhile; the worker must keep running, skip nothing and hold them until
the registry answers again, then publish every one.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.e2e import harness
from tests.e2e import processors_oracle as oracle

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

UPDATES = 40
OUTAGE_S = 8.0


def test_records_met_while_the_registry_is_down_wait_for_it_and_none_is_lost(
    services: Any, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    prefix = f"regout{tag}."
    krx, nxt, un = (f"{prefix}h0{v}pgm0" for v in ("st", "nx", "un"))
    harness.create_topics(services.bootstrap, [krx, nxt, un], 1)
    registry = urllib.parse.urlsplit(services.registry_url)
    assert registry.hostname is not None and registry.port is not None
    proxy = harness.PausableProxy(registry.hostname, registry.port)
    procs = harness.Processes(tmp_path)
    group, port = f"regout-{tag}", harness.free_port()
    env = harness.worker_env(
        harness.base_env(services), prefix, f"{prefix}out.", group, port, tmp_path / "worker"
    )
    env.update(
        SCHEMA_REGISTRY_URL=registry._replace(netloc=f"127.0.0.1:{proxy.port}").geturl(),
        PROCESSORS_STREAMS="program",
    )
    try:
        procs.start("worker", harness.cli("process"), env)
        procs.wait_for("worker", "Worker ready")
        updates = harness.ProgramUpdates(services.registry_url, krx)  # (a new schema id)
        proxy.pause()
        producer = Producer({"bootstrap.servers": services.bootstrap, "linger.ms": 0})
        for _ in range(UPDATES):
            producer.produce(krx, value=updates.value(krx, 0), partition=0)
        assert producer.flush(30) == 0
        procs.sleep_until(time.monotonic() + OUTAGE_S, ["worker"])
        view = harness.counters(port)
        counters = view["counters"]["program"]
        assert "skipped: undecodable" not in counters, counters
        assert counters.get("consumed", 0) == 0, counters  # (waiting: nothing done, or lost)
        assert view["schema_registry"]["waiting_for_s"] > 0, view["schema_registry"]
        proxy.resume()
        inputs = {group: [krx, nxt, un, f"{group}-program-by-venue"]}
        out = f"{prefix}out.program.netbuy"
        deadline = time.monotonic() + 90
        harness.wait_until_settled(procs, ["worker"], services.bootstrap, inputs, [out], deadline)
        counters = harness.counters(port)["counters"]["program"]
        log = (tmp_path / "worker.log").read_text(errors="replace")
    finally:
        procs.stop_all()
        proxy.close()
    assert "skipped: undecodable" not in counters, counters
    assert counters["consumed"] == UPDATES, counters
    assert "schema registry unavailable" in log and "nothing is skipped" in log
    assert "schema registry answers again" in log
    published = oracle.read_topic(services.bootstrap, services.registry_url, out)
    symbols = [m.value for m in published if m.value["scope"] == "symbol"]
    assert sorted(v["received_at"] for v in symbols) == list(range(1, UPDATES + 1))
