"""`kis-stream bench produce`: simulator load -> producer -> real broker, acked.

The simulator runs in load mode in a child process (its own core, as in production where
KIS is remote); the producer runs in this process exactly as `kis-stream produce` wires it
(sessions, pipeline, idempotent producer, kis.frames + per-TR topics) against the local
broker and registry. Two figures:

- sustained throughput: the load target is set above what the producer can take and the
  broker-acknowledged records/s are measured over a window after warm-up;
- latency: at a fixed 5,000 records/s, receive (socket read) -> broker acknowledgement
  percentiles of every message in the window, with where the time goes (receive -> pipeline
  pickup; librdkafka's per-second produce -> sent and broker round-trip p99s). The
  simulator spreads each load step's frames over the step, as a live feed arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer, TopicPartition

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
def _simulator(rate: float, replay: Path | None = None, replay_speed: float = 1.0) -> Iterator[str]:
    """The simulator in a child process: load mode at `rate`, or replaying a recording."""
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    config = SimConfig(
        market=MarketConfig(seed=1, symbols=DEFAULT_SYMBOLS), start=9 * 3600 + 300,
        load=None if replay else rate, replay=replay, replay_speed=replay_speed,
        max_queue=5_000_000,
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


def _settings_values(
    bootstrap: str, registry: str, sim_url: str, linger_ms: float
) -> dict[str, Any]:
    return {
        "kafka_bootstrap": bootstrap,
        "schema_registry_url": registry,
        "kis_url": sim_url,
        "kis_symbols": ",".join(DEFAULT_SYMBOLS),
        "kis_tr_groups": "trades,books,program",
        "kis_venues": "KRX,NXT,UN",
        "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
        "producer_linger_ms": linger_ms,
        "kis_subscribe_interval_s": 0.0,
        "metrics_port": 0,
        "log_level": "WARNING",
        "kis_silence_timeout_s": 0,
    }


def _end_offsets(bootstrap: str, prefix: str) -> tuple[int, int]:
    """(records, frames) the broker holds under `prefix`: sums of partition end offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kis-bench-offsets"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        records = frames = 0
        for name, meta in topics.items():
            if not name.startswith(prefix):
                continue
            total = sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in meta.partitions
            )
            if name == prefix + "frames":
                frames += total
            elif name.removeprefix(prefix)[:1] == "h":
                records += total
        return records, frames
    finally:
        consumer.close()


def measure_latency(
    rate: float, seconds: float, warmup: float, bootstrap: str, registry: str, linger_ms: float
) -> dict[str, Any]:
    """One in-process producer at `rate` records/s: acked rate and exact latency percentiles,
    with where the time goes: receive -> the pipeline picks the frame up (every frame), and
    librdkafka's own per-second figures for produce -> request sent (linger, queueing) and
    request -> broker response (round trip)."""
    from producer.service import ProducerService, tune_gc

    latencies: list[float] = []
    pickups: list[float] = []
    stats: list[tuple[float, str]] = []

    def picked(received_at: int) -> None:
        pickups.append(time.time() - received_at * 1e-6)

    def librdkafka_stats(text: str) -> None:
        stats.append((time.monotonic(), text))

    with _simulator(rate) as sim_url, tempfile.TemporaryDirectory() as spool:
        values = _settings_values(bootstrap, registry, sim_url, linger_ms)
        settings = load_settings(env_file=None, producer_spool_dir=Path(spool), **values)
        service = ProducerService(
            settings, on_latency=latencies.append, on_stats=librdkafka_stats, on_pickup=picked
        )
        service.start()
        tune_gc()  # as `kis-stream produce` does
        try:
            _wait(lambda: service.ready()[0], 60, "sessions did not start streaming")
            time.sleep(warmup)
            pipeline = service.pipeline
            assert pipeline is not None
            (rec0, fr0), t0, cpu0 = (
                _end_offsets(bootstrap, settings.topic_prefix),
                time.monotonic(),
                os.times(),
            )
            del latencies[:], pickups[:]
            time.sleep(seconds)
            # before the offsets query: its client and requests are the bench's, not the feed's
            window, picked_up = sorted(latencies), sorted(pickups)
            (rec1, fr1), t1, cpu1 = (
                _end_offsets(bootstrap, settings.topic_prefix),
                time.monotonic(),
                os.times(),
            )
            backlog = pipeline.backlog
        finally:
            service.stop()
    elapsed = t1 - t0
    cpu_rate = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed
    return {
        "target_records_per_s": rate,
        "shards": 1,
        "seconds": round(elapsed, 2),
        "acked_records_per_s": round((rec1 - rec0) / elapsed),
        "acked_frames_per_s": round((fr1 - fr0) / elapsed),
        "latency_ms": {
            "p50": round(_percentile(window, 0.50) * 1000, 2),
            "p95": round(_percentile(window, 0.95) * 1000, 2),
            "p99": round(_percentile(window, 0.99) * 1000, 2),
            "max": round(window[-1] * 1000, 2) if window else None,
            "samples": len(window),
        },
        "pickup_ms": {
            "p50": round(_percentile(picked_up, 0.50) * 1000, 2),
            "p99": round(_percentile(picked_up, 0.99) * 1000, 2),
        },
        "librdkafka_ms": _librdkafka_latency([text for at, text in stats if t0 <= at <= t1]),
        "producer_cpu_s_per_s": round(cpu_rate, 2),
        **_cpu_figures(cpu_rate, (rec1 - rec0) / elapsed),
        "backlog_frames_at_end": backlog,
    }


def _librdkafka_latency(windows: list[str]) -> dict[str, Any]:
    """Per-second p99s from librdkafka's statistics of the broker connection, as the median
    and the worst second: `queue` = produce() to request sent (linger, batching, waiting for
    an in-flight slot), `rtt` = request sent to broker response."""
    queue, rtt = [], []
    for text in windows:
        for broker in json.loads(text).get("brokers", {}).values():
            if broker.get("nodeid", -1) < 0 or not broker.get("rtt", {}).get("cnt"):
                continue  # the bootstrap entry, or an idle second
            queue.append(broker["int_latency"]["p99"] / 1000)
            rtt.append(broker["rtt"]["p99"] / 1000)
    queue.sort()
    rtt.sort()
    return {
        "queue_p99_median": round(_percentile(queue, 0.5), 2),
        "queue_p99_worst": round(queue[-1], 2) if queue else None,
        "rtt_p99_median": round(_percentile(rtt, 0.5), 2),
        "rtt_p99_worst": round(rtt[-1], 2) if rtt else None,
        "seconds": len(rtt),
    }


def record_load(path: Path, rate: float, seconds: float) -> int:
    """Record `seconds` of load-mode traffic for the whole plan (producer sessions, no Kafka):
    the frames a replay run later serves at a multiple of their pace. Returns records."""
    from producer.approval import ApprovalKeys
    from producer.catalogue import load_catalogue
    from producer.record_file import FrameRecorder
    from producer.service import build_plan
    from producer.session import Session, SessionConfig

    recorder, lock, records = FrameRecorder(path), threading.Lock(), [0]

    def keep(item: tuple[str, int, int, bytes]) -> None:
        raw = item[3]
        with lock:
            recorder.write(item[2], raw)
            if raw[:1] == b"0":
                records[0] += int(raw[raw.index(b"|", 2) + 1 : raw.index(b"|", 2) + 4])

    with _simulator(rate) as sim_url, tempfile.TemporaryDirectory() as work:
        values = _settings_values("unused:9092", "http://unused", sim_url, 5.0)
        settings = load_settings(env_file=None, **values)
        plans, creds = build_plan(settings, load_catalogue())
        approvals = ApprovalKeys(sim_url, Path(work), ttl_s=3600)
        config = SessionConfig(ws_url=settings.target().ws_url, subscribe_interval_s=0.0)
        sessions = [
            Session(plan, cred, approvals, config, on_frame=keep, on_status=lambda e: None)
            for plan, cred in zip(plans, creds, strict=True)
        ]
        for session in sessions:
            session.start()
        time.sleep(seconds)
        for session in sessions:
            session.stop()
        for session in sessions:
            session.join(10)
    recorder.close()
    return records[0]


def measure_replay_throughput(
    recording: Path, speed: float, seconds: float, warmup: float, bootstrap: str, registry: str,
    linger_ms: float,
) -> dict[str, Any]:  # fmt: skip
    """One producer fed by a replay (cheap upstream) faster than it can go: its own ceiling."""
    from producer.service import ProducerService, tune_gc

    with _simulator(0, recording, speed) as sim_url, tempfile.TemporaryDirectory() as spool:
        values = _settings_values(bootstrap, registry, sim_url, linger_ms)
        settings = load_settings(env_file=None, producer_spool_dir=Path(spool), **values)
        service = ProducerService(settings)
        service.start()
        tune_gc()
        try:
            _wait(lambda: service.ready()[0], 60, "sessions did not start streaming")
            time.sleep(warmup)
            pipeline = service.pipeline
            assert pipeline is not None
            (rec0, fr0), t0, cpu0 = (
                _end_offsets(bootstrap, settings.topic_prefix),
                time.monotonic(),
                os.times(),
            )
            time.sleep(seconds)
            (rec1, fr1), t1, cpu1 = (
                _end_offsets(bootstrap, settings.topic_prefix),
                time.monotonic(),
                os.times(),
            )
            backlog = pipeline.backlog
        finally:
            service.stop()
    elapsed = t1 - t0
    cpu_rate = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed
    return {
        "target_records_per_s": None,
        "source": f"replay x{speed:g}",
        "shards": 1,
        "seconds": round(elapsed, 2),
        "acked_records_per_s": round((rec1 - rec0) / elapsed),
        "acked_frames_per_s": round((fr1 - fr0) / elapsed),
        "producer_cpu_s_per_s": round(cpu_rate, 2),
        **_cpu_figures(cpu_rate, (rec1 - rec0) / elapsed),
        "backlog_frames_at_end": backlog,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def measure_throughput(
    rate: float, shards: int, seconds: float, warmup: float, bootstrap: str, registry: str,
    linger_ms: float,
) -> dict[str, Any]:  # fmt: skip
    """`shards` `kis-stream produce` processes sharing the plan; acked records/s at the broker."""
    with _simulator(rate) as sim_url, tempfile.TemporaryDirectory() as work:
        values = _settings_values(bootstrap, registry, sim_url, linger_ms)
        prefix = values["topic_prefix"]
        procs, ports = [], []
        try:
            for index in range(shards):
                port = _free_port()
                env = {**os.environ, **{k.upper(): str(v) for k, v in values.items()}}
                env.update(
                    KIS_SHARD_COUNT=str(shards), KIS_SHARD_INDEX=str(index), METRICS_PORT=str(port),
                    PRODUCER_SPOOL_DIR=str(Path(work) / f"spool{index}"),
                    KIS_MAX_SUBSCRIPTIONS=str(min(41, math.ceil(45 / shards))),
                )  # fmt: skip
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "kis_stream.cli", "produce"],
                        env=env,
                        cwd=work,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                ports.append(port)
            _wait(lambda: all(_ready(p) for p in ports), 90, "shards did not start streaming")
            time.sleep(warmup)
            (rec0, fr0), t0 = _end_offsets(bootstrap, prefix), time.monotonic()
            cpu0 = sum(_cpu_seconds(p.pid) for p in procs)
            time.sleep(seconds)
            (rec1, fr1), t1 = _end_offsets(bootstrap, prefix), time.monotonic()
            cpu1 = sum(_cpu_seconds(p.pid) for p in procs)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    elapsed = t1 - t0
    return {
        "target_records_per_s": rate,
        "shards": shards,
        "seconds": round(elapsed, 2),
        "acked_records_per_s": round((rec1 - rec0) / elapsed),
        "acked_frames_per_s": round((fr1 - fr0) / elapsed),
        "producer_cpu_s_per_s": round((cpu1 - cpu0) / elapsed, 2),
        **_cpu_figures((cpu1 - cpu0) / elapsed, (rec1 - rec0) / elapsed),
    }


def _cpu_figures(cpu_s_per_s: float, records_per_s: float) -> dict[str, Any]:
    """CPU per record (load-independent, unlike records/s) and the machine's load now."""
    return {
        "producer_cpu_us_per_record": (
            round(cpu_s_per_s / records_per_s * 1e6, 1) if records_per_s else None
        ),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(cond: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise click.ClickException(failure)
        time.sleep(0.2)


@click.command("produce")
@click.option(
    "--max-rate",
    default=60_000.0,
    show_default=True,
    help="Load target for the throughput run (above what the producer can take).",
)
@click.option(
    "--shards",
    default=1,
    show_default=True,
    help="Producer processes sharing the plan in the throughput run.",
)
@click.option(
    "--replay-speed",
    default=3.0,
    show_default=True,
    help="Replay run: pace multiple of the recorded load (0 skips the run).",
)
@click.option(
    "--record-rate",
    default=20_000.0,
    show_default=True,
    help="Replay run: load-mode rate of the recording.",
)
@click.option(
    "--record-seconds", default=30.0, show_default=True, help="Replay run: length of the recording."
)
@click.option(
    "--latency-rate",
    default=5_000.0,
    show_default=True,
    help="Load for the latency run (records/s).",
)
@click.option(
    "--latency-runs", default=1, show_default=True, help="Latency runs (each a fresh producer)."
)
@click.option("--seconds", default=15.0, show_default=True, help="Measured window per run.")
@click.option("--warmup", default=3.0, show_default=True, help="Seconds ignored at the start.")
@click.option("--linger-ms", default=5.0, show_default=True)
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP", help="Broker (default: start local one).")
@click.option("--registry", envvar="SCHEMA_REGISTRY_URL", help="Registry URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench_produce(
    max_rate: float, shards: int, replay_speed: float, record_rate: float, record_seconds: float,
    latency_rate: float, latency_runs: int, seconds: float, warmup: float, linger_ms: float,
    bootstrap: str | None, registry: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Producer: sustained acked records/s, and receive-to-ack latency at 5,000 records/s.

    Three runs: throughput fed by simulator load (the simulator competes for the CPU),
    throughput fed by a replay of recorded load (a cheap upstream, like remote KIS), and
    latency at a fixed load.
    """
    with _broker(bootstrap, registry) as (kafka, reg), tempfile.TemporaryDirectory() as work:
        results = [
            {"run": "throughput", "source": "simulator load",
             **measure_throughput(max_rate, shards, seconds, warmup, kafka, reg, linger_ms)},
        ]  # fmt: skip
        if replay_speed > 0:
            recording = Path(work) / "load.jsonl.gz"
            recorded = record_load(recording, record_rate, record_seconds)
            run = measure_replay_throughput(
                recording, replay_speed, seconds, warmup, kafka, reg, linger_ms
            )
            run["recorded_records"] = recorded
            results.append({"run": "throughput", **run})
        for _ in range(latency_runs):
            results.append(
                {"run": "latency", "source": "simulator load",
                 **measure_latency(latency_rate, seconds, warmup, kafka, reg, linger_ms)}
            )  # fmt: skip
    if as_json:
        click.echo(json.dumps({"bench": "produce", "machine": _machine(), "results": results}))
        return
    click.echo(f"machine: {_machine()}")
    for r in results:
        target = r["target_records_per_s"]
        offered = f"load {target:,.0f}/s" if target else r["source"]
        line = (
            f"{r['run']:>10}: {offered}, {r['shards']} process(es) -> "
            f"{r['acked_records_per_s']:,} records/s acked (+{r['acked_frames_per_s']:,} raw "
            f"frames/s), producer CPU {r['producer_cpu_s_per_s']} s/s "
            f"({r['producer_cpu_us_per_record']} us/record), load average {r['load_avg_1m']}"
        )
        if "latency_ms" in r:
            lat, pick, rdk = r["latency_ms"], r["pickup_ms"], r["librdkafka_ms"]
            line += (
                f", receive-to-ack p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"
                f" (receive -> pipeline p99 {pick['p99']} ms; librdkafka per-second p99,"
                f" median/worst: produce -> sent {rdk['queue_p99_median']}/"
                f"{rdk['queue_p99_worst']} ms, broker round trip {rdk['rtt_p99_median']}/"
                f"{rdk['rtt_p99_worst']} ms)"
            )
        click.echo(line)


def _machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} CPUs, load average {load:.2f}, Python {sys.version.split()[0]}"
