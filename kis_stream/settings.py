"""One validated settings model for the producer: environment, `.env` and YAML.

Priority (highest first): explicit overrides (CLI flags) > environment variables > `.env` >
YAML file (`--config FILE` or `KIS_CONFIG`) > defaults. Environment names are the field names
in upper case (`KAFKA_BOOTSTRAP`, `KIS_SYMBOLS`, ...); YAML keys are the same names in either
case. Every secret is a `SecretStr` so that printing the settings never shows it; see
docs/configuration.md for the full list.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

TrGroup = Literal["trades", "books", "program", "expected", "status", "notices"]
Venue = Literal["KRX", "NXT", "UN", "OVERSEAS"]

REAL_REST = "https://openapi.koreainvestment.com:9443"
PAPER_REST = "https://openapivts.koreainvestment.com:29443"
REAL_WS = "ws://ops.koreainvestment.com:21000"
PAPER_WS = "ws://ops.koreainvestment.com:31000"
WS_PATH = "/tryitout/H0STCNT0"
"""KIS' samples append a TR path; one session then carries every TR registered on it."""

KST = dt.timezone(dt.timedelta(hours=9), "KST")

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_yaml_file", default=None)


# The tr_key shapes KIS accepts (a wrong one is refused at subscribe time, which is too late):
# a domestic code is 6 digits or capitals (005930, 0001A0); an overseas RSYM is D (day) or R
# (real-time), a 3-letter exchange and the ticker (DNASAAPL).
_DOMESTIC_KEY = re.compile(r"^[0-9A-Z]{6}$")
_OVERSEAS_KEY = re.compile(r"^[DR][A-Z]{3}[A-Z0-9.\-]{1,16}$")


class KafkaSecurity(Protocol):
    """The broker settings the producer's and the processors' settings both carry."""

    kafka_bootstrap: str
    kafka_security_protocol: str | None
    kafka_sasl_mechanism: str | None
    kafka_sasl_username: str | None
    kafka_sasl_password: SecretStr | None
    kafka_ssl_ca_location: str | None


def librdkafka_config(settings: KafkaSecurity) -> dict[str, str]:
    """librdkafka properties for the broker and its security settings (unset ones left out)."""
    config = {"bootstrap.servers": settings.kafka_bootstrap}
    optional = {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "ssl.ca.location": settings.kafka_ssl_ca_location,
    }
    config.update({k: v for k, v in optional.items() if v})
    if settings.kafka_sasl_password is not None:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return config


class AppCredential(BaseModel):
    """One KIS app key/secret pair: one WebSocket session (KIS allows one per app key)."""

    app_key: SecretStr
    app_secret: SecretStr

    @classmethod
    def parse(cls, value: Any) -> AppCredential:
        """Accept `key:secret` strings, `{app_key, app_secret}` mappings or instances."""
        if isinstance(value, AppCredential):
            return value
        if isinstance(value, str):
            key, sep, secret = value.strip().partition(":")
            if not sep or not key or not secret:
                raise ValueError("each app key must be written as KEY:SECRET")
            return cls(app_key=SecretStr(key), app_secret=SecretStr(secret))
        if isinstance(value, dict):
            lowered = {str(k).lower(): v for k, v in value.items()}
            key_value = lowered.get("app_key", lowered.get("key"))
            secret_value = lowered.get("app_secret", lowered.get("secret"))
            if not key_value or not secret_value:
                raise ValueError("each app key entry needs app_key and app_secret")
            return cls(app_key=SecretStr(str(key_value)), app_secret=SecretStr(str(secret_value)))
        raise ValueError(f"cannot read an app key from {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the sessions connect: REST base (approval key) and WebSocket URL."""

    rest_url: str
    ws_url: str
    paper: bool
    simulator: bool


@dataclass(frozen=True, slots=True)
class MarketHours:
    """Weekday window (Korea time) in which a silent session is suspicious."""

    always: bool
    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> MarketHours:
        text = text.strip().lower()
        if text == "always":
            return cls(True, dt.time(0), dt.time(23, 59, 59))
        try:
            start_s, end_s = text.split("-")
            start = dt.time.fromisoformat(start_s.strip())
            end = dt.time.fromisoformat(end_s.strip())
        except ValueError as exc:
            raise ValueError("market hours must be 'always' or 'HH:MM-HH:MM' (Korea time)") from exc
        if start >= end:
            raise ValueError("market hours: start must be before end")
        return cls(False, start, end)

    def contains(self, instant: dt.datetime) -> bool:
        if self.always:
            return True
        local = instant.astimezone(KST)
        return local.weekday() < 5 and self.start <= local.time() < self.end


def _librdkafka_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _default_groups() -> list[TrGroup]:
    return ["trades", "books", "program"]


def _default_venues() -> list[Venue]:
    return ["KRX", "NXT"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything `kis-stream produce` and `kis-stream redecode` need."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Kafka and the schema registry ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    schema_registry_url: str = "http://127.0.0.1:8081"
    schema_registry_timeout_s: float = Field(10.0, gt=0)
    """Per-request timeout of schema-registry calls."""
    schema_registry_basic_auth: SecretStr | None = None
    """`user:password` for a registry behind basic auth."""
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_config: dict[str, str] = Field(default_factory=dict)
    """Any other librdkafka property, passed through (JSON object in the environment)."""

    # --- KIS target and credentials ---
    kis_url: str | None = None
    """A simulator's base URL (http://host:port); unset means the real KIS servers."""
    kis_ws_url: str | None = None
    """Override the WebSocket URL (default: derived from KIS_URL or KIS_ENV)."""
    kis_env: Literal["real", "paper"] = "real"
    kis_app_key: SecretStr | None = None
    kis_app_secret: SecretStr | None = None
    kis_app_keys: Annotated[list[AppCredential], NoDecode] = Field(default_factory=list)
    """More pairs: `KEY1:SECRET1,KEY2:SECRET2` (env) or a YAML list of {app_key, app_secret}."""
    kis_custtype: Literal["P", "B"] = "P"
    kis_hts_id: str | None = None
    """HTS user id: the tr_key of the execution-notice TRs (group `notices`)."""

    # --- subscription plan ---
    kis_symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["005930", "000660"]
    )
    kis_overseas_symbols: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Overseas RSYM keys (e.g. DNASAAPL) for venue OVERSEAS."""
    kis_tr_groups: Annotated[list[TrGroup], NoDecode] = Field(default_factory=_default_groups)
    kis_venues: Annotated[list[Venue], NoDecode] = Field(default_factory=_default_venues)
    kis_max_subscriptions: int = Field(41, ge=1, le=200)
    """Registrations KIS accepts per session (documented: 41)."""
    kis_shard_count: int = Field(1, ge=1)
    """Producer processes sharing the plan (e.g. a StatefulSet's replicas)."""
    kis_shard_index: int | None = Field(None, ge=0)
    """Which of them this is; default: the ordinal at the end of POD_NAME, else 0. Shard i runs
    the sessions (app keys) i, i + count, i + 2*count, ... of the whole plan."""

    # --- session behaviour ---
    kis_subscribe_interval_s: float = Field(0.2, ge=0)
    """Pause between subscribe requests: rapid loops can get an app key or IP blocked."""
    kis_reconnect_initial_s: float = Field(1.0, gt=0)
    kis_reconnect_max_s: float = Field(60.0, gt=0)
    kis_reconnect_reset_s: float = Field(60.0, ge=0)
    """A connection that streamed this long resets the backoff to its initial delay."""
    kis_connect_timeout_s: float = Field(10.0, gt=0)
    kis_silence_timeout_s: float = Field(60.0, ge=0)
    """Recycle a session with no data frame for this long during market hours (0 = never)."""
    kis_market_hours: str = "08:00-20:00"
    """Korea-time weekday window for silence detection, or `always`."""
    kis_approval_ttl_s: float = Field(20 * 3600.0, gt=0)
    """Re-issue a cached approval key after this age (KIS keys last about a day)."""
    kis_pingpong_reply: Literal["pong", "echo", "both"] = "both"
    """Answer PINGPONG with a pong control frame, the text echoed as a message, or both."""

    # --- topics ---
    topic_prefix: str = "kis."
    topic_partitions: int = Field(3, ge=1)
    topic_replication: int = Field(1, ge=1)
    frames_retention_ms: int = Field(30 * 24 * 3600 * 1000, ge=-1)
    """kis.frames is the source of truth for redecode: keep it long (-1 = forever)."""

    # --- producer, memory bound and spool ---
    producer_compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"
    producer_linger_ms: float = Field(5.0, ge=0)
    producer_memory_mb: int = Field(256, ge=1)
    """librdkafka's in-memory queue bound; past it, records go to the on-disk spool."""
    producer_memory_messages: int = Field(500_000, ge=10)
    producer_backlog_frames: int = Field(20_000, ge=10)
    """Frames read but not yet decoded; when full, sessions stop reading (TCP backpressure)."""
    producer_spool_dir: Path = Path(".local/spool")
    producer_spool_segment_mb: int = Field(64, ge=1)
    producer_marks_interval_ms: float = Field(20.0, ge=0)
    """Receive marks to `<prefix>producer.marks` at most this often while records are being
    acknowledged (0 = no marks; consumers then fall back to their settle time)."""
    producer_marks_heartbeat_s: float = Field(1.0, gt=0)
    """A mark at least this often while nothing changes (consumers see the producer alive)."""
    shutdown_flush_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM, wait this long for the broker; whatever is still unacked goes to the spool."""

    # --- operations ---
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Prometheus /metrics, /healthz and /readyz (0 = disabled)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    kis_record_file: Path | None = None
    """Also write every raw frame to this gzip JSONL file (same as --record)."""

    @field_validator("kis_symbols", "kis_overseas_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any, info: ValidationInfo) -> Any:
        value = _split_csv(value)
        overseas = info.field_name == "kis_overseas_symbols"
        shape, example = (_OVERSEAS_KEY, "DNASAAPL") if overseas else (_DOMESTIC_KEY, "005930")
        if isinstance(value, list):
            for symbol in value:
                text = str(symbol)
                if not shape.match(text):
                    raise ValueError(
                        f"symbol {text!r} is not a tr_key KIS accepts (like {example}): "
                        "KIS would refuse it as an invalid tr_key"
                    )
            if len({str(s) for s in value}) != len(value):
                raise ValueError("symbols must not repeat")
        return value

    @field_validator("kis_tr_groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        value = _split_csv(value)
        return [str(v).lower() for v in value] if isinstance(value, list) else value

    @field_validator("kis_venues", mode="before")
    @classmethod
    def _venues(cls, value: Any) -> Any:
        value = _split_csv(value)
        return [str(v).upper() for v in value] if isinstance(value, list) else value

    @field_validator("kis_app_keys", mode="before")
    @classmethod
    def _app_keys(cls, value: Any) -> Any:
        if value is None:
            return []
        items = _split_csv(value) if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("KIS_APP_KEYS must be KEY:SECRET,KEY:SECRET or a list")
        return [AppCredential.parse(item) for item in items]

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _kafka_config(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()
            }
        return value

    @field_validator("kis_url", "kis_ws_url", "kis_shard_index", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kis_url")
    @classmethod
    def _kis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("KIS_URL must be the simulator's base URL, http://host:port")
        return value.rstrip("/") if value else value

    @field_validator("kis_ws_url")
    @classmethod
    def _kis_ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("KIS_WS_URL must start with ws:// or wss://")
        return value

    @field_validator("kis_market_hours")
    @classmethod
    def _market_hours(cls, value: str) -> str:
        MarketHours.parse(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not value or not set(value) <= allowed:
            raise ValueError("topic prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.kis_app_key is None) != (self.kis_app_secret is None):
            raise ValueError("KIS_APP_KEY and KIS_APP_SECRET must be given together")
        keys = [c.app_key.get_secret_value() for c in self.credentials]
        if len(set(keys)) != len(keys):
            raise ValueError("an app key is listed twice (KIS allows one session per app key)")
        if "notices" in self.kis_tr_groups and not self.kis_hts_id:
            raise ValueError("TR group 'notices' needs KIS_HTS_ID (the notices' tr_key)")
        if not self.kis_tr_groups:
            raise ValueError("KIS_TR_GROUPS is empty: nothing to subscribe")
        if self.kis_reconnect_initial_s > self.kis_reconnect_max_s:
            raise ValueError("KIS_RECONNECT_INITIAL_S must not exceed KIS_RECONNECT_MAX_S")
        if self.shard_index >= self.kis_shard_count:
            raise ValueError("KIS_SHARD_INDEX must be below KIS_SHARD_COUNT")
        if self.kis_env == "paper" and self.kis_url is None and "NXT" in self.kis_venues:
            raise ValueError("paper trading has no NXT TRs: remove NXT from KIS_VENUES")
        return self

    # --- derived views ---
    @property
    def credentials(self) -> list[AppCredential]:
        """All app key pairs: KIS_APP_KEY/KIS_APP_SECRET first, then KIS_APP_KEYS."""
        pairs: list[AppCredential] = []
        if self.kis_app_key is not None and self.kis_app_secret is not None:
            pairs.append(AppCredential(app_key=self.kis_app_key, app_secret=self.kis_app_secret))
        pairs.extend(self.kis_app_keys)
        return pairs

    @property
    def shard_index(self) -> int:
        if self.kis_shard_index is not None:
            return self.kis_shard_index
        pod, _, ordinal = os.environ.get("POD_NAME", "").rpartition("-")
        return int(ordinal) if self.kis_shard_count > 1 and pod and ordinal.isdigit() else 0

    @property
    def market_hours(self) -> MarketHours:
        return MarketHours.parse(self.kis_market_hours)

    def target(self) -> Target:
        """The REST and WebSocket endpoints: a simulator when KIS_URL is set, else KIS."""
        if self.kis_url is not None:
            ws = self.kis_ws_url or "ws" + self.kis_url.removeprefix("http") + WS_PATH
            return Target(self.kis_url, ws, self.kis_env == "paper", True)
        paper = self.kis_env == "paper"
        rest = PAPER_REST if paper else REAL_REST
        ws = self.kis_ws_url or (PAPER_WS if paper else REAL_WS) + WS_PATH
        return Target(rest, ws, paper, False)

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties shared by the producer, admin and consumer clients."""
        config = librdkafka_config(self)
        config.update(self.kafka_config)
        return config

    def registry_config(self) -> dict[str, Any]:
        # confluent-kafka's registry client waits forever by default: a registry that
        # accepts connections but never answers would hang the producer's start-up.
        config: dict[str, Any] = {
            "url": self.schema_registry_url,
            "timeout": self.schema_registry_timeout_s,
        }
        if self.schema_registry_basic_auth is not None:
            config["basic.auth.user.info"] = self.schema_registry_basic_auth.get_secret_value()
        return config

    def secret_values(self) -> Iterator[str]:
        """Every secret in these settings, for the log redaction filter."""
        for cred in self.credentials:
            yield cred.app_key.get_secret_value()
            yield cred.app_secret.get_secret_value()
        for secret in (self.kafka_sasl_password, self.schema_registry_basic_auth):
            if secret is not None:
                yield secret.get_secret_value()
        for key, value in self.kafka_config.items():
            if any(word in key for word in ("password", "secret", "token")):
                yield value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _yaml_file.get() or _env_config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if path is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_read_yaml(path)))
        sources.append(file_secret_settings)
        return tuple(sources)


def _env_config_path() -> Path | None:
    value = os.environ.get("KIS_CONFIG")
    return Path(value) if value else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of setting: value")
    return {str(k).lower(): v for k, v in data.items()}


class SettingsError(Exception):
    """Settings that cannot be used, with a message naming the offending variables."""


def load_settings(
    config_file: Path | str | None = None,
    *,
    env_file: Path | str | None = ".env",
    **overrides: Any,
) -> Settings:
    """Read and validate the settings; raises SettingsError with a readable message."""
    token = _yaml_file.set(Path(config_file) if config_file else None)
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
    finally:
        _yaml_file.reset(token)


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable rather than the field path."""
    lines = ["invalid settings:"]
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error.get("loc", ())]
        name = loc[0].upper() if loc else "settings"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"  {name}: {message}")
    return "\n".join(lines)
