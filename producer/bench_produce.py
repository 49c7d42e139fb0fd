"""`kis-stream bench produce`: simulator load -> producer -> real broker, acked.

The simulator runs in load mode in a child process (its own core, as in production where
KIS is remote); the producer runs in this process exactly as `kis-stream produce` wires it
(sessions, pipeline, idempotent producer, kis.frames + per-TR topics) against the local
broker and registry. Two figures:

- sustained throughput: the load target is set above what the producer can take and the
  broker-acknowledged records/s are measured over a window after warm-up;
- latency: at a fixed 5,000 records/s, receive (socket read) -> broker acknowledgement
  percentiles of every message in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from kis_stream.settings import load_settings
from simulator.market import DEFAULT_SYMBOLS, MarketConfig
from simulator.server import SimConfig, SimulatorServer


def _serve(config: SimConfig, ports: Any, stop: Any) -> None:
    async def main() -> None:
        server = SimulatorServer(config)
        _, port = await server.start()
        ports.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop()

    asyncio.run(main())


@contextlib.contextmanager
def _simulator(rate: float) -> Iterator[str]:
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    config = SimConfig(
        market=MarketConfig(seed=1, symbols=DEFAULT_SYMBOLS), start=9 * 3600 + 300, load=rate,
        max_queue=2_000_000,
    )  # fmt: skip
    proc = ctx.Process(target=_serve, args=(config, ports, stop), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=60)}"
    finally:
        stop.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


@contextlib.contextmanager
def _broker(bootstrap: str | None, registry: str | None) -> Iterator[tuple[str, str]]:
    if bootstrap and registry:
        yield bootstrap, registry
        return
    from kis_stream.services import LocalServices

    with LocalServices(Path(".local/bench-services")) as services:
        yield services.bootstrap, services.registry_url


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(
    rate: float, seconds: float, warmup: float, bootstrap: str, registry: str, linger_ms: float
) -> dict[str, Any]:
    """Run simulator load at `rate` records/s through the producer; acked rate and latency."""
    from producer.service import ProducerService

    latencies: list[float] = []
    with _simulator(rate) as sim_url, tempfile.TemporaryDirectory() as spool:
        settings = load_settings(
            env_file=None,
            kafka_bootstrap=bootstrap,
            schema_registry_url=registry,
            kis_url=sim_url,
            kis_app_keys=[],
            kis_symbols=list(DEFAULT_SYMBOLS),
            kis_tr_groups=["trades", "books", "program"],
            kis_venues=["KRX", "NXT", "UN"],
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            producer_spool_dir=Path(spool),
            producer_linger_ms=linger_ms,
            kis_subscribe_interval_s=0.0,
            metrics_port=0,
            log_level="WARNING",
            kis_silence_timeout_s=0,
        )
        service = ProducerService(settings, on_latency=latencies.append)
        service.start()
        try:
            deadline = time.monotonic() + 60
            while not service.ready()[0]:
                if time.monotonic() > deadline:
                    raise click.ClickException("sessions did not start streaming")
                time.sleep(0.1)
            time.sleep(warmup)
            sink, pipeline = service.sink, service.pipeline
            assert sink is not None and pipeline is not None
            counts0, acked0, t0 = _snapshot(pipeline.counts), sink.acked, time.monotonic()
            del latencies[:]
            cpu0 = os.times()
            time.sleep(seconds)
            counts1, acked1, t1 = _snapshot(pipeline.counts), sink.acked, time.monotonic()
            cpu1 = os.times()
            window = sorted(latencies)
            backlog = pipeline.backlog
            spooled = sink.spooling
        finally:
            service.stop()
    elapsed = t1 - t0
    records = counts1["records"] - counts0["records"]
    messages = sum(counts1.values()) - sum(counts0.values())
    acked_messages = acked1 - acked0
    share = records / messages if messages else 0.0
    return {
        "target_records_per_s": rate,
        "seconds": round(elapsed, 2),
        "records_decoded_per_s": round(records / elapsed),
        "acked_messages_per_s": round(acked_messages / elapsed),
        "acked_records_per_s": round(acked_messages * share / elapsed),
        "frames_per_s": round((counts1["frames"] - counts0["frames"]) / elapsed),
        "latency_ms": {
            "p50": round(_percentile(window, 0.50) * 1000, 2),
            "p95": round(_percentile(window, 0.95) * 1000, 2),
            "p99": round(_percentile(window, 0.99) * 1000, 2),
            "max": round(window[-1] * 1000, 2) if window else None,
            "samples": len(window),
        },
        "producer_cpu_s_per_s": round(
            ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed, 2
        ),
        "backlog_frames_at_end": backlog,
        "spooled": spooled,
    }


def _snapshot(counts: Any) -> dict[str, int]:
    return {
        "records": counts.records,
        "frames": counts.frames,
        "dead_letters": counts.dead_letters,
        "status": counts.status_events,
    }


@click.command("produce")
@click.option(
    "--max-rate",
    default=60_000.0,
    show_default=True,
    help="Load target for the throughput run (above what the producer can take).",
)
@click.option(
    "--latency-rate",
    default=5_000.0,
    show_default=True,
    help="Load for the latency run (records/s).",
)
@click.option("--seconds", default=15.0, show_default=True, help="Measured window per run.")
@click.option("--warmup", default=3.0, show_default=True, help="Seconds ignored at the start.")
@click.option("--linger-ms", default=5.0, show_default=True)
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP", help="Broker (default: start local one).")
@click.option("--registry", envvar="SCHEMA_REGISTRY_URL", help="Registry URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench_produce(
    max_rate: float, latency_rate: float, seconds: float, warmup: float, linger_ms: float,
    bootstrap: str | None, registry: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Producer: sustained acked records/s, and receive-to-ack latency at 5,000 records/s."""
    with _broker(bootstrap, registry) as (kafka, reg):
        results = [
            {"run": "throughput", **measure(max_rate, seconds, warmup, kafka, reg, linger_ms)},
            {"run": "latency", **measure(latency_rate, seconds, warmup, kafka, reg, linger_ms)},
        ]
    if as_json:
        click.echo(json.dumps({"bench": "produce", "results": results}))
        return
    for r in results:
        lat = r["latency_ms"]
        click.echo(
            f"{r['run']:>10}: load {r['target_records_per_s']:,.0f}/s -> "
            f"{r['acked_records_per_s']:,} records/s acked ({r['acked_messages_per_s']:,} "
            f"messages/s incl. kis.frames), latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
            f"p99 {lat['p99']} ms, producer CPU {r['producer_cpu_s_per_s']} s/s, "
            f"backlog at end {r['backlog_frames_at_end']}"
        )
