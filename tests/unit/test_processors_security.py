"""The processors reach a secured broker: Faust and the start-up clients get the same settings."""

from __future__ import annotations

from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from processors import cli, topology
from processors.config import ProcessorSettings

SASL_ENV = {
    "KAFKA_BOOTSTRAP": "broker-1:9093",
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "processors",
    "KAFKA_SASL_PASSWORD": "s3cret-pw",
}


@pytest.fixture
def sasl_settings(monkeypatch: pytest.MonkeyPatch) -> ProcessorSettings:
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    return ProcessorSettings(streams=("imbalance",))  # type: ignore[call-arg]


def test_faust_gets_sasl_over_ssl(sasl_settings: ProcessorSettings) -> None:
    auth = credentials_to_aiokafka_auth(sasl_settings.broker_credentials())
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "processors"
    assert auth["sasl_plain_password"] == "s3cret-pw"
    assert auth["ssl_context"] is not None


def test_plaintext_and_ssl_only() -> None:
    assert ProcessorSettings().broker_credentials() is None  # type: ignore[call-arg]
    ssl_only = ProcessorSettings(kafka_security_protocol="SSL")  # type: ignore[call-arg]
    auth = credentials_to_aiokafka_auth(ssl_only.broker_credentials())
    assert auth["security_protocol"] == "SSL" and auth["ssl_context"] is not None
    plain_sasl = ProcessorSettings(  # type: ignore[call-arg]
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u"
    )
    auth = credentials_to_aiokafka_auth(plain_sasl.broker_credentials())
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "PLAIN"
    assert auth["ssl_context"] is None


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="security protocol"):
        ProcessorSettings(kafka_security_protocol="KERBEROS-ISH")  # type: ignore[call-arg]


def test_password_is_not_in_the_settings_repr(sasl_settings: ProcessorSettings) -> None:
    assert "s3cret-pw" not in repr(sasl_settings)
    assert "s3cret-pw" not in repr(sasl_settings.broker_credentials())


class _Stop(Exception):
    pass


def test_start_up_clients_use_the_security_settings(
    sasl_settings: ProcessorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, dict[str, Any]] = {}

    class FakeAdmin:
        def __init__(self, config: dict[str, Any]) -> None:
            seen["admin"] = config

        def list_topics(self, timeout: float) -> Any:
            raise _Stop

    class FakeConsumer:
        def __init__(self, config: dict[str, Any]) -> None:
            seen["consumer"] = config

        def list_topics(self, timeout: float) -> Any:
            raise _Stop

        def close(self) -> None:
            pass

    monkeypatch.setattr(topology, "AdminClient", FakeAdmin)
    with pytest.raises(_Stop):
        cli.prepare(sasl_settings)
    monkeypatch.setattr("confluent_kafka.Consumer", FakeConsumer)
    with pytest.raises(_Stop):
        topology.commit_start_offsets(sasl_settings.kafka_client_config(), "g", ["t"])
    for config in seen.values():
        assert config["bootstrap.servers"] == "broker-1:9093"
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "processors"
        assert config["sasl.password"] == "s3cret-pw"
    assert set(seen) == {"admin", "consumer"}


def test_spread_end_offsets_reader_uses_the_security_settings(
    sasl_settings: ProcessorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processors import spread

    seen: list[dict[str, Any]] = []

    class FakeConsumer:
        def __init__(self, config: dict[str, Any], logger: Any = None) -> None:
            seen.append(config)

        def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
            return 0, 42

        def poll(self, timeout: float) -> None:
            return None

    monkeypatch.setattr(spread, "Consumer", FakeConsumer)
    reader = spread.EndOffsets(sasl_settings.kafka_client_config())
    assert reader.read([("kis.h0stasp0", 0)]) == [42]
    assert seen[0]["bootstrap.servers"] == "broker-1:9093"
    assert seen[0]["security.protocol"] == "SASL_SSL"
    assert seen[0]["sasl.username"] == "processors"
    assert seen[0]["sasl.password"] == "s3cret-pw"
    assert seen[0]["group.id"] == "kis-stream-end-offsets"
