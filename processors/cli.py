"""`kis-stream process`: run a Faust worker with the derived streams.

Before the worker starts it waits for the raw input topics, refuses to run if topics read
together have different partition counts, creates the output and helper topics, and
registers the output schemas. Start more workers with the same settings to share the
partitions. SIGTERM or SIGINT stops the worker cleanly (offsets committed, producer flushed).
"""

from __future__ import annotations

import io
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from processors.config import STREAMS, ProcessorSettings

if TYPE_CHECKING:
    from processors.app import Processors


def prepare(settings: ProcessorSettings) -> dict[str, int]:
    """Check and create topics; each stream's partition count (TopologyError if unusable)."""
    from processors import topology

    admin = topology.admin_client(settings.kafka_client_config())
    names = settings.topology()
    partitions = topology.plan(admin, names, settings.streams, settings.topic_wait)
    wanted: dict[str, int] = {}
    compacted: dict[str, dict[str, str]] = {}
    for stream, count in partitions.items():
        for name in (*names.outputs(stream), *names.helpers(stream)):
            wanted[name] = count
        # Created here, not by Faust on first use: an agent that writes a table before the
        # consumer's metadata knows its changelog fails (PartitionsMismatch, 0 partitions).
        for name in names.changelogs(stream):
            wanted[name] = count
            compacted[name] = {"cleanup.policy": "compact"}
    topology.ensure_topics(admin, wanted, settings.replication, compacted)
    inputs = [t for stream in partitions for t in (*names.inputs(stream), *names.helpers(stream))]
    topology.commit_start_offsets(settings.kafka_client_config(), settings.app_id, inputs)
    return partitions


@click.command("process")
@click.option("--streams", help=f"Comma-separated subset of {','.join(STREAMS)} (default: all).")
@click.option("--app-id", help="Faust app id (consumer group, changelog prefix).")
@click.option("--web-port", type=int, help="Port of the web views (PROCESSORS_WEB_PORT).")
@click.option("--web-host", help="Address the web views bind to (default 127.0.0.1).")
@click.option("--without-web", is_flag=True, help="Do not serve the web views.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Faust data directory.")
@click.option("--bar-grace", type=float, help="Seconds before a quiet bar is published.")
@click.option("--spread-max-age-ms", type=float, help="Staleness bound of the spread pairs.")
@click.option("--topic-wait", type=float, help="Seconds to wait for the raw input topics.")
@click.option("--log-level", help="debug, info, warning, error.")
def process(
    streams: str | None,
    app_id: str | None,
    web_port: int | None,
    web_host: str | None,
    without_web: bool,
    data_dir: Path | None,
    bar_grace: float | None,
    spread_max_age_ms: float | None,
    topic_wait: float | None,
    log_level: str | None,
) -> None:
    """Run the Faust processors: 1-s bars, book imbalance, program net-buy, KRX/NXT spread.

    Reads KAFKA_BOOTSTRAP, SCHEMA_REGISTRY_URL and PROCESSORS_* settings (flags win).
    """
    overrides: dict[str, Any] = {
        "streams": streams,
        "app_id": app_id,
        "web_port": web_port,
        "web_host": web_host,
        "data_dir": data_dir,
        "bar_grace": bar_grace,
        "spread_max_age_ms": spread_max_age_ms,
        "topic_wait": topic_wait,
        "log_level": log_level,
    }
    if without_web:
        overrides["web_enabled"] = False
    try:
        settings = ProcessorSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    run(settings)


def run(settings: ProcessorSettings) -> None:
    """Prepare the topics and schemas, then run the worker until SIGTERM/SIGINT."""
    import faust

    from processors.app import Processors
    from processors.topology import TopologyError

    share_the_gil(settings.gil_switch_interval_ms)
    try:
        partitions = prepare(settings)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    processors = Processors(settings, partitions)
    register_schemas(processors, settings.registry_wait)
    click.echo(
        f"kis-stream process: streams {', '.join(settings.streams)}; partitions {partitions}",
        err=True,
    )
    log_lines_at_once()
    worker = faust.Worker(processors.app, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner lowers the root logger to DEBUG at WARN and above, which
    # makes every library debug call build a log record: a large cost per event.
    worker.spinner = None
    worker.execute_from_commandline()


def register_schemas(
    processors: Processors, wait_s: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Register the output schemas, waiting up to `wait_s` for a registry that does not
    answer (starting before it, or during a restart); one that refuses a schema (4xx: not
    compatible, invalid) stops the worker at once with its reason."""
    deadline, said = time.monotonic() + wait_s, 0.0
    while True:
        try:
            processors.register_schemas()
            return
        except Exception as exc:  # the registry client raises several types
            status = getattr(exc, "http_status_code", None)
            refused = isinstance(status, int) and 400 <= status < 500
            if refused or time.monotonic() >= deadline:
                raise click.ClickException(f"cannot register the output schemas: {exc}") from exc
            if time.monotonic() - said >= 10:
                url = urllib.parse.urlsplit(processors.settings.schema_registry_url)
                netloc = f"{url.hostname}:{url.port}" if url.port else url.hostname or ""
                where = url._replace(netloc=netloc).geturl()  # (without any user info)
                click.echo(
                    f"kis-stream process: waiting for the schema registry at {where} "
                    f"({type(exc).__name__}: {exc})",
                    err=True,
                )
                said = time.monotonic()
            sleep(1.0)


def share_the_gil(interval_ms: float) -> None:
    """Let the consumer thread in sooner: the agents hold the GIL for up to the switch
    interval while aiokafka's thread waits to take in a fetch response (see
    `ProcessorSettings.gil_switch_interval_ms`)."""
    sys.setswitchinterval(interval_ms / 1000)


def log_lines_at_once() -> None:
    """Faust logs to stdout, which Python writes in 8 KiB blocks when it is not a terminal (a
    pipe, a file, a container's log): lines came late, and a killed worker lost its last ones,
    the very ones that say why. Line by line instead."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
