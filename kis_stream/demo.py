"""`kis-stream demo`: the whole pipeline on one machine, with a live view of the results.

It starts (or reuses) the local broker and registry, the simulator (unless KIS
credentials are in the environment, in which case it talks to real KIS), the producer
and the processors as child processes -- the same commands a user runs by hand -- and
then shows the derived streams as a downstream consumer sees them. Ctrl-C stops every
process it started, in reverse order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from kis_stream import topics

DEFAULT_SYMBOLS = "005930,000660,035420,005380,051910"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Children:
    """Child processes in their own process groups, stopped together and in reverse."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        from kis_stream.services import die_with_parent_hook

        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kis_stream.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # a demo killed outright (SIGKILL, OOM) must not leave its pipeline running
            preexec_fn=die_with_parent_hook(os.getpid()),
        )
        self.procs.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]

    def stop(self, timeout: float = 20.0) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _wait_http(url: str, timeout: float) -> bool:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.3)
    return False


@contextlib.contextmanager
def _local_services(workdir: Path) -> Iterator[tuple[str, str]]:
    """The broker and registry from the environment, or local ones started for the demo."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield bootstrap, registry
        return
    from kis_stream.services import LocalServices

    with LocalServices(workdir) as svc:
        yield svc.bootstrap, svc.registry_url


def _lag_and_consume(
    bootstrap: str, registry: str, duration: float | None, view: bool, symbols_shown: int
) -> int:
    """Consume the derived topics and render them; returns how many records arrived."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from rich.console import Console
    from rich.live import Live

    from kis_stream.dashboard import Dashboard

    dashboard = Dashboard(max_rows=symbols_shown)
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kis-stream-demo-{os.getpid()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 2000,
        }
    )
    consumer.subscribe(list(topics.DERIVED))
    console = Console()
    started = time.monotonic()
    received = 0
    last_lag = 0.0
    live = Live(dashboard.render(), console=console, refresh_per_second=4) if view else None
    try:
        if live is not None:
            live.start()
        while duration is None or time.monotonic() - started < duration:
            for msg in consumer.consume(500, timeout=0.25):
                if msg.error() or msg.value() is None:
                    continue
                topic = msg.topic() or ""
                try:
                    ctx = SerializationContext(topic, MessageField.VALUE)
                    value: Any = deserialize(msg.value(), ctx)
                except Exception as exc:  # keep showing the rest; say what failed
                    dashboard.status = f"cannot decode a record of {topic}: {exc}"
                    continue
                if isinstance(value, dict):
                    dashboard.add(topic, value)
                    received += 1
            now = time.monotonic()
            if now - last_lag > 2.0:
                last_lag = now
                for part in consumer.assignment():
                    pos = consumer.position([TopicPartition(part.topic, part.partition)])[0]
                    _, high = consumer.get_watermark_offsets(part, cached=True) or (0, 0)
                    offset = pos.offset if pos.offset >= 0 else high
                    dashboard.set_lag(part.topic, max(high - offset, 0))
            if live is not None:
                elapsed = now - started
                dashboard.status = f"kis-stream demo · {elapsed:,.0f}s · Ctrl-C stops everything"
                live.update(dashboard.render())
    finally:
        if live is not None:
            live.stop()
        _close_within(consumer, CLOSE_TIMEOUT_S)
    return received


CLOSE_TIMEOUT_S = 10.0


def _close_within(consumer: Any, timeout: float) -> None:
    """Close the view's consumer, but never let it hold the demo's shutdown.

    librdkafka's close leaves the consumer group and can block for long when the group is
    rebalancing or the broker is slow (confluent-kafka-python #1667); the view has nothing
    to commit, so after `timeout` the demo goes on stopping the pipeline regardless.
    """
    closer = threading.Thread(target=consumer.close, name="demo-consumer-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        click.echo(f"the view's Kafka consumer did not close within {timeout:.0f}s; going on")


@click.command()
@click.option("--symbols", default=lambda: os.environ.get("KIS_SYMBOLS", DEFAULT_SYMBOLS))
@click.option("--seed", default=7, show_default=True, help="Simulator market seed.")
@click.option(
    "--duration", type=float, default=None, help="Stop after N seconds (default: run until Ctrl-C)."
)
@click.option("--no-view", is_flag=True, help="No live table; print a summary at the end.")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".local/demo"), show_default=True
)
def demo(symbols: str, seed: int, duration: float | None, no_view: bool, workdir: Path) -> None:
    """Run the whole pipeline (broker, registry, simulator, producer, processors) with a live view.

    With KIS_APP_KEY and KIS_APP_SECRET in the environment the producer connects to real KIS
    instead of the simulator.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    real_kis = bool(os.environ.get("KIS_APP_KEY") and os.environ.get("KIS_APP_SECRET"))
    children = Children(workdir)
    click.echo(f"kis-stream demo: logs in {workdir}/*.log")
    try:
        with _local_services(workdir / "services") as (bootstrap, registry):
            try:
                _run(
                    children,
                    bootstrap,
                    registry,
                    symbols,
                    seed,
                    real_kis,
                    workdir,
                    duration,
                    no_view,
                )
            finally:
                children.stop()  # before the broker and registry go away
    except KeyboardInterrupt:
        click.echo("stopped.")


def _run(
    children: Children,
    bootstrap: str,
    registry: str,
    symbols: str,
    seed: int,
    real_kis: bool,
    workdir: Path,
    duration: float | None,
    no_view: bool,
) -> None:
    click.echo(f"broker {bootstrap} · registry {registry}")
    env = dict(os.environ)
    env.update(KAFKA_BOOTSTRAP=bootstrap, SCHEMA_REGISTRY_URL=registry, KIS_SYMBOLS=symbols)
    if not real_kis:
        port = _free_port()
        children.start(
            "simulator",
            ["sim", "--port", str(port), "--seed", str(seed), "--symbols", symbols],
            env,
        )
        env["KIS_URL"] = f"http://127.0.0.1:{port}"
        if not _wait_http(env["KIS_URL"] + "/_sim/stats", 30):
            raise click.ClickException("the simulator did not start; see simulator.log")
        click.echo(f"simulator {env['KIS_URL']} (seed {seed})")
    else:
        click.echo("KIS credentials found: connecting to real KIS")
    # Free ports, so the demo runs beside anything else on this machine (another demo too).
    env.setdefault("METRICS_PORT", str(_free_port()))
    env.setdefault("PROCESSORS_WEB_PORT", str(_free_port()))
    env.setdefault("PRODUCER_SPOOL_DIR", str(workdir / "spool"))
    children.start("producer", ["produce"], env)
    env.setdefault("PROCESSORS_DATA_DIR", str(workdir / "faust"))
    children.start("processors", ["process"], env)
    received = _lag_and_consume(bootstrap, registry, duration, not no_view, 8)
    dead = children.dead()
    if no_view:
        click.echo(f"derived records received: {received}")
    if dead:
        raise click.ClickException(f"stopped early: {', '.join(dead)} (see their logs)")
