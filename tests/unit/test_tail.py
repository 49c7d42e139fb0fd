"""`kis-stream tail` without a broker: addresses, decoding, rendering and clear failures."""

from __future__ import annotations

import io
import json
import socket
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner

from kis_stream.cli import main
from kis_stream.tail import (
    KST,
    TailError,
    WireDecoder,
    kafka_config,
    read_env_file,
    resolve_endpoints,
    select_fields,
    to_jsonable,
)

SCHEMA = {
    "type": "record",
    "name": "Probe",
    "fields": [
        {"name": "symbol", "type": "string"},
        {
            "name": "event_time",
            "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
        },
        {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "stck_cntg_hour", "type": ["null", {"type": "int", "logicalType": "time-millis"}]},
        {"name": "bsop_date", "type": ["null", {"type": "int", "logicalType": "date"}]},
        {"name": "stck_prpr", "type": ["null", "long"]},
        {"name": "name_ko", "type": ["null", "string"]},
    ],
}


SCHEMA_FIELDS = [field["name"] for field in SCHEMA["fields"]]  # type: ignore[index]


def wire(schema_id: int, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(SCHEMA), record)
    return struct.pack(">bI", 0, schema_id) + body.getvalue()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


# --- addresses ---------------------------------------------------------------------------


def test_options_win_over_environment_and_services_env(tmp_path: Path) -> None:
    services = tmp_path / "services.env"
    services.write_text("KAFKA_BOOTSTRAP=file:1\nSCHEMA_REGISTRY_URL=http://file/\n")
    env = {"KAFKA_BOOTSTRAP": "env:1", "SCHEMA_REGISTRY_URL": "http://env"}
    got = resolve_endpoints("opt:1", "http://opt/", env, [services])
    assert (got.bootstrap, got.registry) == ("opt:1", "http://opt")
    got = resolve_endpoints(None, None, env, [services])
    assert (got.bootstrap, got.registry, got.source) == ("env:1", "http://env", "KAFKA_BOOTSTRAP")


def test_services_env_is_the_fallback(tmp_path: Path) -> None:
    missing, services = tmp_path / "nope.env", tmp_path / "services.env"
    services.write_text(
        "# written by make services-up\nexport KAFKA_BOOTSTRAP=127.0.0.1:39092\n"
        "SCHEMA_REGISTRY_URL='http://127.0.0.1:38081/apis/ccompat/v7'\n"
    )
    got = resolve_endpoints(None, None, {}, [missing, services])
    assert got.bootstrap == "127.0.0.1:39092"
    assert got.registry == "http://127.0.0.1:38081/apis/ccompat/v7"
    assert got.source == str(services)
    assert read_env_file(services)["KAFKA_BOOTSTRAP"] == "127.0.0.1:39092"


def test_no_broker_address_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TailError, match="KAFKA_BOOTSTRAP"):
        resolve_endpoints(None, None, {}, [tmp_path / "absent.env"])


def test_kafka_config_never_commits_and_passes_security_through() -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}
    config = kafka_config("b:9092", env, ["fetch.wait.max.ms=10"])
    assert config["enable.auto.commit"] is False
    assert config["group.id"].startswith("kis-stream-tail-")
    assert config["group.id"] != kafka_config("b:9092", {}, [])["group.id"]
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.username"] == "u"
    assert config["fetch.wait.max.ms"] == "10"
    with pytest.raises(TailError, match="PROPERTY=VALUE"):
        kafka_config("b:9092", {}, ["no-equals-sign"])


# --- decoding and rendering ------------------------------------------------------------------


def test_wire_format_is_decoded_with_the_writer_schema_fetched_once() -> None:
    fetched: list[int] = []

    def fetch(schema_id: int) -> str:
        fetched.append(schema_id)
        return json.dumps(SCHEMA)

    record = {
        "symbol": "005930",
        "event_time": 1_736_989_201_123,
        "received_at": 1_736_989_201_123_456,
        "stck_cntg_hour": (9 * 3600 + 1) * 1000,
        "bsop_date": 20_104,
        "stck_prpr": 71_500,
        "name_ko": "삼성전자",
    }
    decoder = WireDecoder(fetch)
    first = decoder.decode(wire(42, record))
    decoder.decode(wire(42, record))
    assert fetched == [42]
    assert to_jsonable(first) == {
        "symbol": "005930",
        "event_time": "2025-01-16T01:00:01.123+00:00",
        "received_at": "2025-01-16T01:00:01.123456+00:00",
        "stck_cntg_hour": "09:00:01",
        "bsop_date": "2025-01-16",
        "stck_prpr": 71_500,
        "name_ko": "삼성전자",
    }
    assert to_jsonable(first, KST)["event_time"] == "2025-01-16T10:00:01.123+09:00"


def test_nulls_stay_null() -> None:
    record = {
        "symbol": "000660",
        "event_time": None,
        "received_at": 0,
        "stck_cntg_hour": None,
        "bsop_date": None,
        "stck_prpr": None,
        "name_ko": None,
    }
    decoded = to_jsonable(WireDecoder(lambda _id: json.dumps(SCHEMA)).decode(wire(1, record)))
    assert decoded["event_time"] is None and decoded["stck_prpr"] is None
    assert decoded["received_at"] == "1970-01-01T00:00:00+00:00"


def test_payloads_outside_the_wire_format_are_shown_not_hidden() -> None:
    decoder = WireDecoder(lambda _id: pytest.fail("no registry lookup for plain payloads"))
    assert decoder.decode(b"005930") == "005930"
    assert decoder.decode(None) is None
    assert decoder.decode(b"\xff\xfe\x00") == {"base64": "//4A"}
    probe = dict.fromkeys(SCHEMA_FIELDS) | {"symbol": "x", "received_at": 0}
    raw = WireDecoder(None).decode(wire(7, probe))  # --raw: no registry, still labelled
    assert raw["schema_id"] == 7 and raw["avro_base64"]


def test_bytes_fields_print_as_text_when_they_are_utf8() -> None:
    frame = {"frame": b"0|H0STCNT0|001|005930^090001", "junk": b"\xff\x00"}
    assert to_jsonable(frame) == {
        "frame": "0|H0STCNT0|001|005930^090001",
        "junk": {"base64": "/wA="},
    }
    assert to_jsonable(frame, bytes_as_text=False) == {
        "frame": "MHxIMFNUQ05UMHwwMDF8MDA1OTMwXjA5MDAwMQ==",
        "junk": "/wA=",
    }


def test_fields_are_selected_in_the_requested_order() -> None:
    assert select_fields({"a": 1, "b": 2, "c": 3}, ["c", "a", "z"]) == {"c": 3, "a": 1, "z": None}
    assert select_fields("text", ["a"]) == "text"


# --- the command's failures ----------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["tail", *args], env={"KAFKA_BOOTSTRAP": None})


def test_unreachable_broker_fails_fast_with_the_address() -> None:
    address = f"127.0.0.1:{closed_port()}"
    result = run("kis.bars.1s", "--bootstrap", address, "--raw", "--connect-timeout", "1")
    assert result.exit_code == 1
    assert f"cannot reach Kafka at {address} (from --bootstrap)" in result.output


def test_unreachable_registry_fails_fast_with_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/apis/ccompat/v7"
    result = run("kis.bars.1s", "--bootstrap", "127.0.0.1:1", "--registry", url)
    assert result.exit_code == 1
    assert f"cannot reach the schema registry at {url}" in result.output


def test_bad_options_are_rejected() -> None:
    assert run("kis.bars.1s", "--format", "xml").exit_code == 2
    assert run("kis.bars.1s", "-n", "0").exit_code == 2
    result = run("kis.bars.1s", "--bootstrap", "b:1", "--raw", "--tz", "Mars/Olympus")
    assert result.exit_code == 2 and "time zone" in result.output
