"""Settings of the processors worker (environment and `.env`; `kis-stream process` flags win).

`KAFKA_BOOTSTRAP` and `SCHEMA_REGISTRY_URL` are the project-wide names; everything else is
`PROCESSORS_<FIELD>` (e.g. `PROCESSORS_WEB_PORT`, `PROCESSORS_BAR_GRACE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kis_stream.settings import librdkafka_config
from processors.topology import Topology

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

STREAMS = ("bars", "imbalance", "program", "spread")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROCESSORS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP")
    schema_registry_url: str = Field(
        "http://127.0.0.1:8081", validation_alias="SCHEMA_REGISTRY_URL"
    )
    # The producer's names (kis_stream/settings.py): one environment serves both.
    kafka_security_protocol: str | None = Field(None, validation_alias="KAFKA_SECURITY_PROTOCOL")
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (unset: PLAINTEXT)."""
    kafka_sasl_mechanism: str | None = Field(None, validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_location: str | None = Field(None, validation_alias="KAFKA_SSL_CA_LOCATION")

    topic_prefix: str = Field(
        "kis.", validation_alias=AliasChoices("PROCESSORS_TOPIC_PREFIX", "TOPIC_PREFIX")
    )
    """Prefix of the raw and derived topics (the producer's TOPIC_PREFIX)."""
    output_prefix: str | None = None
    """Prefix of the derived topics if not `topic_prefix` (to run a second deployment)."""
    app_id: str = "kis-stream-processors"
    """Faust app id: the consumer group and the prefix of the changelog topics."""
    streams: Annotated[tuple[str, ...], NoDecode] = STREAMS
    """Which derived streams this worker runs (comma-separated)."""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    data_dir: Path = Path(".local/faust")
    log_level: str = "info"

    bar_grace: float = 1.0
    """Seconds (wall clock) after a bar's last tick before a quiet bar is published."""
    bar_clock: float = 0.2
    """Interval of the grace timer (seconds)."""
    bar_horizon: float = 60.0
    """How far (seconds of event time) behind the newest bar a late tick can still revise."""
    republish_window: float = 10.0
    """After recovery, bars published within this many seconds before the last one are resent."""
    spread_max_age_ms: float = 5_000.0
    """Skip a KRX/NXT pair whose quotes were received further apart than this."""
    spread_settle: float = 1.0
    """Without receive marks: seconds a trigger waits, once the other venue's partition is
    read to its end, for records still in flight (then it pairs with what the other venue
    has). A wall-clock mitigation, not a guarantee: the other venue's quote received just
    before the trigger can reach the broker later than the trigger (0.1 s was too short)."""
    spread_marks: bool = True
    """Decide held triggers by the producers' receive marks (`<prefix>producer.marks`, see
    docs/streams.md): as soon as every live producer has acknowledged everything received up
    to the trigger and the other venue is read that far. Without live marks (none published,
    or off) the settle rule applies."""
    spread_mark_timeout: float = 3.0
    """Seconds without a mark after which a producer no longer counts (its heartbeat: 1 s)."""
    spread_clock: float = 0.01
    """Interval (seconds) of the timer that releases held triggers (it also runs at once
    when a new receive mark arrives)."""
    spread_max_wait: float = 60.0
    """Last resort (the brokers' end offsets cannot be read): seconds after which a trigger
    is paired with whatever has been read. A worker catching up on a backlog holds triggers
    until the other venue's topic has caught up too, which can take a while."""

    fetch_max_wait_ms: int = 100
    """How long a fetch waits at the broker for data (Faust hard-codes 1,500 ms, which held
    one book topic's partition back for up to 1.5 s: processors/fetch_wait.py)."""

    gil_switch_interval_ms: float = Field(1.0, gt=0)
    """How long a thread holding the GIL runs before another that waits for it gets a turn
    (Python's default: 5 ms). The worker's consumer thread (aiokafka's fetches) waits for
    the GIL while the agents run; at 1 ms the spread worker took more events per second in
    6 of 6 paired bench runs (docs/benchmarks.md, session 7)."""

    topic_wait: float = 60.0
    """Seconds to wait at start-up for the raw input topics to exist."""
    registry_wait: float = Field(60.0, ge=0)
    """Seconds to wait at start-up for the schema registry to take the output schemas."""
    replication: int = 1
    """Replication factor of the topics the processors create (outputs, changelogs)."""
    standby_replicas: int = 1
    commit_interval: float = 1.0
    """Seconds between offset commits: also how much a crash makes the workers read again."""
    session_timeout: float = 30.0
    """Seconds before the group drops a worker that stopped answering (a SIGKILLed one)."""
    producer_linger_ms: float = 20.0
    """How long the producer gathers records per partition before a request: each produce
    request costs the worker a loopback/network write, so fewer, larger ones (a few ms of
    latency) raise the records per CPU-second."""
    producer_max_batch_bytes: int = 262_144
    """Largest batch per partition and request (Faust's default, 16 KiB, fills at ~170 records)."""
    batch_delivery: bool = True
    """Hand each partition's records of one fetch to the agents as one Faust event (taken
    apart again in `Processors.events`): Faust's per-event machinery then runs once per fetch
    instead of once per record (processors/faust_speed.py). Commits are unchanged."""
    gc_freeze: bool = True
    """Leave the objects the worker made at start-up out of full garbage collections once it
    runs (processors/gc_pauses.py): they paused the event loop for 0.1-0.3 s each time."""
    inline_delivery: bool = False
    """Experimental (processors/faust_speed.py): hand each fetched record to the agents without
    Faust's four tasks per record. Off: one end-to-end run with it on saw an offset gap after
    a rebalance (not reproduced or explained yet)."""

    @field_validator("kafka_security_protocol")
    @classmethod
    def _protocol(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()
        if value not in SECURITY_PROTOCOLS:
            raise ValueError(f"unknown security protocol {value}; one of {SECURITY_PROTOCOLS}")
        return value

    @field_validator("streams", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("streams")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(STREAMS))
        if unknown:
            raise ValueError(f"unknown streams {unknown}; choose from {', '.join(STREAMS)}")
        if not value:
            raise ValueError("no stream selected")
        return tuple(dict.fromkeys(value))

    def topology(self) -> Topology:
        return Topology(self.topic_prefix, self.app_id, self.output_prefix)

    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap.split(",") if host]

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties (start-up admin and consumer clients): the same broker and
        security settings as the Faust app's (`broker_credentials`)."""
        return librdkafka_config(self)

    def broker_credentials(self) -> CredentialsT | None:
        """Faust's `broker_credentials` for the security settings (None for PLAINTEXT)."""
        import ssl

        from faust.auth import SASLCredentials, SSLCredentials

        protocol = self.kafka_security_protocol or "PLAINTEXT"
        if protocol == "PLAINTEXT":
            return None
        context = None
        if protocol.endswith("SSL"):
            context = ssl.create_default_context(cafile=self.kafka_ssl_ca_location)
        if protocol == "SSL":
            return SSLCredentials(context)
        password = self.kafka_sasl_password
        return SASLCredentials(
            username=self.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            ssl_context=context,
            mechanism=self.kafka_sasl_mechanism or "PLAIN",
        )
