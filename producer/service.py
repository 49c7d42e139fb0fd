"""`kis-stream produce`: the long-running producer, wired from the settings.

Start-up order matters: the plan is checked first (a plan over capacity fails before
anything connects), then topics and schemas, then the spool (anything left by the previous
run, less what the broker turns out to hold already, is queued ahead of new data), the
pipeline, the health endpoint, and only then the sessions. Shutdown runs the other way:
stop reading, finish the queued frames, flush to the broker (spooling what it does not take
in time), close.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
from confluent_kafka.admin import AdminClient, NewTopic

from kis_stream.logging import configure_logging, quiet_repeats, register_secrets
from kis_stream.settings import AppCredential, Settings, SettingsError, load_settings
from producer.approval import ApprovalKeys
from producer.catalogue import Catalogue, load_catalogue
from producer.codec import Codec, SchemaIds, TopicNames
from producer.health import HealthServer
from producer.marks import MarkPublisher, ReceiveMarks
from producer.metrics import ProducerMetrics
from producer.pipeline import Pipeline
from producer.plan import PlanError, SessionPlan, build_subscriptions, shard
from producer.record_file import FrameRecorder
from producer.session import Connect, Session, SessionConfig, SessionState, websocket_connect
from producer.sink import KafkaSink, producer_config
from producer.spool import Spool
from producer.spool_dedupe import drop_already_delivered
from producer.status import StatusEvent

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("producer.sink", "librdkafka")
"""Kafka client trouble, logged once per kind per 10 s (with a count): while the broker is
down librdkafka reports each failed connection, about five lines a second."""


class StartupError(RuntimeError):
    """The producer cannot start; the message says what to fix."""


def resolve_credentials(settings: Settings, sessions_needed: int) -> list[AppCredential]:
    """The configured app keys; against a simulator without any, as many demo keys as needed."""
    if settings.credentials:
        return settings.credentials
    if settings.kis_url is None:
        raise StartupError(
            "no KIS credentials: set KIS_APP_KEY and KIS_APP_SECRET (or KIS_APP_KEYS) for real "
            "KIS, or KIS_URL to use a simulator"
        )
    return [
        AppCredential.parse(f"sim-app-key-{i}:sim-app-secret-{i}") for i in range(sessions_needed)
    ]


def build_plan(
    settings: Settings, catalogue: Catalogue
) -> tuple[list[SessionPlan], list[AppCredential]]:
    """Shard the plan over the app keys; PlanError (clear message) when it does not fit."""
    subs = build_subscriptions(
        symbols=settings.kis_symbols,
        overseas_symbols=settings.kis_overseas_symbols,
        groups=settings.kis_tr_groups,
        venues=settings.kis_venues,
        hts_id=settings.kis_hts_id,
        paper=settings.target().paper,
        catalogue=catalogue,
    )
    per_session = settings.kis_max_subscriptions
    creds = resolve_credentials(settings, max(1, math.ceil(len(subs) / per_session)))
    plans = shard(subs, sessions_available=len(creds), per_session=per_session)
    mine = [
        (plan, cred)
        for plan, cred in zip(plans, creds, strict=False)
        if plan.index % settings.kis_shard_count == settings.shard_index
    ]
    return [plan for plan, _ in mine], [cred for _, cred in mine]


def ensure_topics(
    settings: Settings, topics: TopicNames, catalogue: Catalogue, timeout: float = 30.0
) -> None:
    """Create missing topics (all raw topics with the same partition count)."""
    admin = AdminClient(dict(settings.kafka_client_config()))
    wanted: dict[str, dict[str, str]] = {
        topics.frames: {"retention.ms": str(settings.frames_retention_ms)},
        topics.status: {},
        topics.dead_letter: {"retention.ms": str(settings.frames_retention_ms)},
        topics.marks: {"retention.ms": str(3600 * 1000)},  # only the latest marks matter
    }
    for spec in catalogue:
        wanted[topics.raw(spec.tr_id)] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = admin.list_topics(
                timeout=min(10.0, max(1.0, deadline - time.monotonic()))
            ).topics
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StartupError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}"
                ) from None
            time.sleep(1.0)
    for name, meta in existing.items():
        if (
            name in wanted
            and name.startswith(topics.prefix)
            and name not in (topics.frames, topics.status, topics.dead_letter, topics.marks)
        ) and len(meta.partitions) != settings.topic_partitions:
            log.warning(
                "raw topic has a different partition count than configured",
                extra={
                    "topic": name,
                    "partitions": len(meta.partitions),
                    "configured": settings.topic_partitions,
                },
            )
    missing = [
        NewTopic(
            name,
            1 if name == topics.marks else settings.topic_partitions,
            settings.topic_replication,
            config=config,
        )
        for name, config in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            log.info(
                "created topic", extra={"topic": name, "partitions": settings.topic_partitions}
            )
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StartupError(f"cannot create topic {name}: {exc}") from None


@contextlib.contextmanager
def spool_lock(directory: Path) -> Iterator[None]:
    """One producer per spool directory: two would send the same spooled records twice."""
    directory.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (directory / "lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(f"another producer is using the spool directory {directory}") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class ProducerService:
    def __init__(
        self,
        settings: Settings,
        *,
        record_file: Path | None = None,
        catalogue: Catalogue | None = None,
        connect: Connect = websocket_connect,
        on_latency: Callable[[float], None] | None = None,
        on_stats: Callable[[str], None] | None = None,
        on_pickup: Callable[[int], None] | None = None,
    ) -> None:
        """`on_latency`, `on_stats`, `on_pickup`: measurement hooks for `bench produce` (each
        message's receive-to-ack seconds; librdkafka's statistics JSON; each data frame's
        receive time as the pipeline picks it up)."""
        self.settings = settings
        self._on_latency = on_latency
        self._on_stats = on_stats
        self._on_pickup = on_pickup
        self.catalogue = catalogue or load_catalogue()
        self.topics = TopicNames(settings.topic_prefix)
        self.metrics = ProducerMetrics()
        self.record_file = record_file or settings.kis_record_file
        self._connect = connect
        self.sessions: list[Session] = []
        self.sink: KafkaSink | None = None
        self.pipeline: Pipeline | None = None
        self.recorder: FrameRecorder | None = None
        self.health: HealthServer | None = None
        self.marks: ReceiveMarks | None = None
        self.mark_publisher: MarkPublisher | None = None
        self._lock: contextlib.ExitStack = contextlib.ExitStack()
        self._started = False
        self._stopped = False
        self.spooled_at_close = 0

    # --- start ---
    def start(self) -> None:
        settings = self.settings
        register_secrets(settings.secret_values())
        plans, creds = build_plan(settings, self.catalogue)  # PlanError before any I/O
        register_secrets(c.app_key.get_secret_value() for c in creds)
        register_secrets(c.app_secret.get_secret_value() for c in creds)
        total = sum(len(p.subscriptions) for p in plans)
        log.info(
            "subscription plan",
            extra={
                "registrations": total,
                "sessions": len(plans),
                "target": settings.target().ws_url,
            },
        )
        spool_dir = settings.producer_spool_dir
        self._lock.enter_context(spool_lock(spool_dir))
        try:
            self._start(plans, creds, spool_dir)
        except BaseException:
            self.stop()
            raise

    def _start(self, plans: list[SessionPlan], creds: list[AppCredential], spool_dir: Path) -> None:
        settings = self.settings
        ensure_topics(settings, self.topics, self.catalogue)
        codec = Codec(
            self.topics,
            SchemaIds(settings.registry_config(), spool_dir / "schema-ids.json"),
            self.catalogue,
        )
        try:
            codec.prepare(sub.tr_id for plan in plans for sub in plan.subscriptions)
        except Exception as exc:
            raise StartupError(
                f"cannot register schemas at {settings.schema_registry_url}: {exc}"
            ) from None
        spool = Spool(
            spool_dir / "segments", segment_bytes=settings.producer_spool_segment_mb << 20
        )
        if spool.unread:  # records in flight at the last shutdown may have reached the broker
            skipped = drop_already_delivered(spool, dict(settings.kafka_client_config()))
            self.metrics.spool_already_delivered.inc(skipped)
        if settings.producer_marks_interval_ms > 0:
            not_raw = {self.topics.frames, self.topics.status, self.topics.dead_letter}
            self.marks = ReceiveMarks(track=lambda topic: topic not in not_raw)
        config = producer_config(
            settings.kafka_client_config(),
            compression=settings.producer_compression,
            linger_ms=settings.producer_linger_ms,
            memory_mb=settings.producer_memory_mb,
            memory_messages=settings.producer_memory_messages,
        )
        self.sink = KafkaSink(
            config,
            spool,
            self.metrics,
            rejected_path=spool_dir / "rejected.jsonl",
            on_latency=self._on_latency,
            on_stats=self._on_stats,
            marks=self.marks,
        )
        if self.marks is not None:
            sink, marks_topic = self.sink, self.topics.marks
            self.mark_publisher = MarkPublisher(
                self.marks,
                lambda key, value: sink.produce_raw(marks_topic, key, value),
                header=codec.mark_header,
                interval_s=settings.producer_marks_interval_ms / 1000,
                heartbeat_s=settings.producer_marks_heartbeat_s,
                paused=lambda: sink.spooling,
            )
            log.info("receive marks", extra={"producer": self.mark_publisher.producer})
            self.sink.publish_marks(self.mark_publisher)
        if self.record_file is not None:
            self.recorder = FrameRecorder(self.record_file)
        self.pipeline = Pipeline(
            sink=self.sink,
            codec=codec,
            metrics=self.metrics,
            catalogue=self.catalogue,
            recorder=self.recorder,
            max_backlog=settings.producer_backlog_frames,
            on_pickup=self._on_pickup,
            marks=self.marks,
        )
        self.pipeline.start()
        if settings.metrics_port:
            try:
                self.health = HealthServer(
                    settings.metrics_host,
                    settings.metrics_port,
                    self.metrics.registry,
                    self.live,
                    self.ready,
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: "
                    f"{exc.strerror}; set METRICS_PORT (0 disables the endpoint)"
                ) from None
            self.health.start()
        target = settings.target()
        approvals = ApprovalKeys(
            target.rest_url, spool_dir / "approval", ttl_s=settings.kis_approval_ttl_s
        )
        session_config = SessionConfig(
            ws_url=target.ws_url,
            custtype=settings.kis_custtype,
            subscribe_interval_s=settings.kis_subscribe_interval_s,
            reconnect_initial_s=settings.kis_reconnect_initial_s,
            reconnect_max_s=settings.kis_reconnect_max_s,
            reconnect_reset_s=settings.kis_reconnect_reset_s,
            connect_timeout_s=settings.kis_connect_timeout_s,
            silence_timeout_s=settings.kis_silence_timeout_s,
            market_hours=settings.market_hours,
            pingpong_reply=settings.kis_pingpong_reply,
        )
        pipeline = self.pipeline
        self.pipeline.submit_status(
            StatusEvent(event="started", session="producer", at=time.time_ns() // 1000,
                        subscriptions=sum(len(p.subscriptions) for p in plans))
        )  # fmt: skip
        for plan, cred in zip(plans, creds, strict=True):
            session = Session(
                plan,
                cred,
                approvals,
                session_config,
                on_frame=pipeline.submit_frame,
                on_status=self._on_status,
                on_state=self._on_state,
                connect=self._connect,
                marks=self.marks,
            )
            self.sessions.append(session)
        for session in self.sessions:
            session.start()
        self._started = True

    def _on_status(self, event: StatusEvent) -> None:
        if event.event == "disconnected":
            self.metrics.reconnects.labels(event.session).inc()
        elif event.event == "subscribe_failed":
            code = (event.reason or "OTHER").split(":", 1)[0]
            self.metrics.subscribe_refusals.labels(event.session, code).inc()
        if self.pipeline is not None:
            self.pipeline.submit_status(event)

    def _on_state(self, name: str, state: SessionState) -> None:
        self.metrics.set_session_state(name, state)

    # --- health ---
    def live(self) -> tuple[bool, str]:
        if self.pipeline is None or not self.pipeline.alive:
            return False, "pipeline not running"
        if self.sink is not None and self.sink.fatal is not None:
            return False, f"fatal producer error: {self.sink.fatal.str()}"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, detail = self.live()
        if not live:
            return False, detail
        waiting = [s for s in self.sessions if not s.ready]
        if not self._started or waiting:
            refused = [
                f"{s.name} {sub.tr_id}/{sub.tr_key} ({reason})"
                for s in waiting
                for sub, reason in list(s.rejected.items())
            ]
            detail = "sessions not streaming: " + ", ".join(s.name for s in waiting)
            return False, detail + (
                "; registrations refused: " + ", ".join(refused) if refused else ""
            )
        return True, "ok"

    # --- stop ---
    def stop(self) -> None:
        """Stop reading, finish queued frames, flush (spooling the rest); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for session in self.sessions:
            session.stop()
        for session in self.sessions:
            session.join(10)
        if self.pipeline is not None:
            self.pipeline.stop()
            if self.pipeline.backlog:
                log.critical(
                    "pipeline died with frames unprocessed",
                    extra={"frames": self.pipeline.backlog},
                )
        if self.sink is not None:
            self.spooled_at_close = self.sink.close(self.settings.shutdown_flush_timeout_s)
        if self.recorder is not None:
            self.recorder.close()
        if self.health is not None:
            self.health.stop()
        self._lock.close()

    def wait(self, stop: threading.Event) -> int:
        """Block until `stop` is set or the producer hits a fatal error; returns an exit code."""
        while not stop.wait(0.5):
            ok, detail = self.live()
            if not ok:
                log.critical("producer unhealthy, stopping", extra={"detail": detail})
                return 1
        return 0


def tune_gc() -> None:
    """Fewer, larger young-generation collections: the hot path allocates many short-lived,
    acyclic objects (records, dicts, bytes) that reference counting frees anyway, and every
    collection stalls the socket and pipeline threads. Long-lived start-up objects are frozen
    out of the collector's view."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal received: stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML settings file.",
)
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(".env"),
    show_default=True,
)
@click.option(
    "--record",
    "record_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write every raw frame to FILE (gzip JSONL) for replay.",
)
@click.option("--symbols", help="Override KIS_SYMBOLS (comma-separated).")
def produce(
    config_file: Path | None, env_file: Path, record_file: Path | None, symbols: str | None
) -> None:
    """Stream KIS real-time data into Kafka: raw frames, per-TR Avro topics, status, dead letters.

    Settings come from the environment, .env and --config (see docs/configuration.md).
    Without KIS credentials and without KIS_URL it starts an embedded simulator.
    """
    overrides: dict[str, Any] = {}
    if symbols:
        overrides["kis_symbols"] = symbols
    try:
        settings = load_settings(
            config_file, env_file=env_file if env_file.exists() else None, **overrides
        )
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    quiet_repeats(QUIET_LOGGERS)
    with contextlib.ExitStack() as stack:
        if settings.kis_url is None and not settings.credentials:
            settings = stack.enter_context(_embedded_simulator(settings))
        service = ProducerService(settings, record_file=record_file)
        stop = threading.Event()
        _install_signal_handlers(stop)
        try:
            service.start()
        except (PlanError, StartupError) as exc:
            raise click.ClickException(str(exc)) from None
        tune_gc()
        code = 0
        try:
            code = service.wait(stop)
        finally:
            service.stop()
            log.info("producer stopped", extra={"spooled": service.spooled_at_close})
    if code:
        raise SystemExit(code)


@contextlib.contextmanager
def _embedded_simulator(settings: Settings) -> Iterator[Settings]:
    """No credentials and no KIS_URL: run the simulator in-process (demo behaviour)."""
    from simulator import MarketConfig, SimConfig, run_in_thread

    log.warning("no KIS credentials and no KIS_URL: starting an embedded simulator")
    market = MarketConfig(symbols=tuple(settings.kis_symbols))
    sim = run_in_thread(SimConfig(market=market))
    try:
        yield settings.model_copy(update={"kis_url": sim.base_url})
    finally:
        sim.stop()
