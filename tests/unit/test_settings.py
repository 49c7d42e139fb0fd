"""Settings: environment names, .env, YAML, priority, validation messages, secrets."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from kis_stream.logging import JsonFormatter, RedactingFilter, redact, register_secrets
from kis_stream.settings import KST, MarketHours, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("KIS_", "KAFKA_", "SCHEMA_REGISTRY", "TOPIC_", "SPOOL_", "METRICS_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_contract_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://reg:8081")
    monkeypatch.setenv("KIS_APP_KEY", "appkey-123")
    monkeypatch.setenv("KIS_APP_SECRET", "secret-456")
    monkeypatch.setenv("KIS_URL", "http://127.0.0.1:18080/")
    monkeypatch.setenv("KIS_SYMBOLS", "005930, 000660,035420")
    monkeypatch.setenv("KIS_TR_GROUPS", "Trades,books")
    monkeypatch.setenv("KIS_VENUES", "krx")
    s = load_settings(env_file=None)
    assert s.kafka_bootstrap == "10.0.0.1:9092"
    assert s.schema_registry_url == "http://reg:8081"
    assert s.kis_symbols == ["005930", "000660", "035420"]
    assert s.kis_tr_groups == ["trades", "books"]
    assert s.kis_venues == ["KRX"]
    assert [c.app_key.get_secret_value() for c in s.credentials] == ["appkey-123"]
    target = s.target()
    assert target.simulator and target.rest_url == "http://127.0.0.1:18080"
    assert target.ws_url.startswith("ws://127.0.0.1:18080/")
    assert "secret-456" not in repr(s)


def test_several_key_pairs_from_env_and_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KIS_APP_KEYS", "k1:s1,k2:s2")
    s = load_settings(env_file=None)
    assert [
        (c.app_key.get_secret_value(), c.app_secret.get_secret_value()) for c in s.credentials
    ] == [
        ("k1", "s1"),
        ("k2", "s2"),
    ]
    monkeypatch.delenv("KIS_APP_KEYS")
    config = tmp_path / "c.yaml"
    config.write_text(
        "KIS_APP_KEYS:\n  - {app_key: ya, app_secret: yb}\n  - yc:yd\n"
        "kafka_config: {socket.timeout.ms: 1000, enable.ssl.certificate.verification: false}\n"
    )
    s = load_settings(config, env_file=None)
    assert [c.app_key.get_secret_value() for c in s.credentials] == ["ya", "yc"]
    assert s.kafka_client_config()["socket.timeout.ms"] == "1000"
    assert s.kafka_client_config()["enable.ssl.certificate.verification"] == "false"


def test_priority_env_over_dotenv_over_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "kafka_bootstrap: yaml:1\nschema_registry_url: http://yaml\ntopic_partitions: 7\n"
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text("KAFKA_BOOTSTRAP=dotenv:1\nSCHEMA_REGISTRY_URL=http://dotenv\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "env:1")
    s = load_settings(config, env_file=dotenv)
    assert s.kafka_bootstrap == "env:1"
    assert s.schema_registry_url == "http://dotenv"
    assert s.topic_partitions == 7
    assert load_settings(config, env_file=dotenv, topic_partitions=2).topic_partitions == 2


def test_kis_config_env_names_the_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('kis_symbols: ["005930"]\n')
    monkeypatch.setenv("KIS_CONFIG", str(config))
    assert load_settings(env_file=None).kis_symbols == ["005930"]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"KIS_APP_KEY": "only-key"}, "KIS_APP_KEY and KIS_APP_SECRET must be given together"),
        ({"KIS_APP_KEYS": "k1"}, "KEY:SECRET"),
        ({"KIS_APP_KEYS": "k1:a,k1:b"}, "listed twice"),
        ({"KIS_SYMBOLS": "0059-30"}, "KIS_SYMBOLS"),
        ({"KIS_SYMBOLS": "005930,59"}, "'59' is not a tr_key KIS accepts"),
        ({"KIS_SYMBOLS": "005930,0059300"}, "KIS_SYMBOLS"),
        ({"KIS_OVERSEAS_SYMBOLS": "AAPL"}, "like DNASAAPL"),
        ({"KIS_TR_GROUPS": "trades,bogus"}, "KIS_TR_GROUPS"),
        ({"KIS_TR_GROUPS": "notices"}, "KIS_HTS_ID"),
        ({"KIS_VENUES": "NYSE"}, "KIS_VENUES"),
        ({"KIS_URL": "127.0.0.1:8080"}, "KIS_URL must be"),
        ({"KIS_MARKET_HOURS": "9-5"}, "KIS_MARKET_HOURS"),
        ({"TOPIC_PARTITIONS": "0"}, "TOPIC_PARTITIONS"),
        ({"TOPIC_PREFIX": "bad prefix"}, "TOPIC_PREFIX"),
        ({"KIS_ENV": "paper"}, "no NXT"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings(env_file=None)
    assert needle in str(err.value)


def test_bad_yaml_is_a_settings_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(config, env_file=None)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", env_file=None)


def test_real_and_paper_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    real = load_settings(env_file=None).target()
    assert not real.simulator and real.rest_url.endswith(":9443") and ":21000" in real.ws_url
    monkeypatch.setenv("KIS_ENV", "paper")
    monkeypatch.setenv("KIS_VENUES", "KRX")
    paper = load_settings(env_file=None).target()
    assert paper.paper and ":29443" in paper.rest_url and ":31000" in paper.ws_url


def test_kafka_pass_through_and_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw-secret")
    monkeypatch.setenv("KAFKA_CONFIG", '{"client.id": "kis"}')
    monkeypatch.setenv("KIS_APP_KEYS", "key-a:sec-a")
    s = load_settings(env_file=None)
    config = s.kafka_client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "pw-secret"
    assert config["client.id"] == "kis"
    assert set(s.secret_values()) == {"key-a", "sec-a", "pw-secret"}


def test_market_hours_are_weekdays_in_korea_time() -> None:
    hours = MarketHours.parse("08:00-20:00")
    monday_9am_kst = dt.datetime(2026, 11, 23, 9, 0, tzinfo=KST)
    assert hours.contains(monday_9am_kst)
    assert not hours.contains(monday_9am_kst.replace(hour=21))
    assert not hours.contains(monday_9am_kst - dt.timedelta(days=1))  # Sunday
    assert hours.contains(dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.UTC))  # 09:30 KST
    assert MarketHours.parse("always").contains(monday_9am_kst - dt.timedelta(days=1))


def test_redaction_masks_secrets_in_messages_args_extras_and_tracebacks() -> None:
    register_secrets(["SUPERSECRETKEY", "approval-0123", None, ""])
    assert redact("key=SUPERSECRETKEY!") == "key=***!"
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "got %s and %s", ("SUPERSECRETKEY", "x"), None
    )
    record.detail = {"approval_key": "approval-0123"}
    try:
        raise RuntimeError("failed with approval-0123")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "SUPERSECRETKEY" not in line and "approval-0123" not in line
    assert "got *** and x" in line and "RuntimeError" in line


def test_shard_index_from_env_or_pod_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_SHARD_COUNT", "3")
    monkeypatch.setenv("POD_NAME", "kis-producer-2")
    assert load_settings(env_file=None).shard_index == 2
    monkeypatch.setenv("KIS_SHARD_INDEX", "1")
    assert load_settings(env_file=None).shard_index == 1
    monkeypatch.setenv("KIS_SHARD_INDEX", "")  # an empty pod-index label: fall back to POD_NAME
    assert load_settings(env_file=None).shard_index == 2
    monkeypatch.setenv("KIS_SHARD_INDEX", "3")
    with pytest.raises(SettingsError, match="KIS_SHARD_INDEX"):
        load_settings(env_file=None)


def test_symbols_of_every_shape_kis_accepts_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_SYMBOLS", "005930,0001A0")
    monkeypatch.setenv("KIS_OVERSEAS_SYMBOLS", "DNASAAPL,RNYSBRK.B")
    s = load_settings(env_file=None)
    assert s.kis_symbols == ["005930", "0001A0"]
    assert s.kis_overseas_symbols == ["DNASAAPL", "RNYSBRK.B"]
