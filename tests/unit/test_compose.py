"""docker-compose.yml, its real-KIS override and the Dockerfile, validated without Docker.

Two independent checks of the compose files: the raw YAML against the Compose
Specification's JSON schema (the one compose-go embeds), and a full load by compose-go
itself (scripts/compose-check: the loader inside `docker compose`, which also merges the
override, applies profiles, reads env files and checks consistency). On top of those, the
project's own rules: every kis-stream service runs a real CLI subcommand with options that
parse, start order follows health, and addresses agree across services.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.unit.deploy_helpers import ROOT, cli_problems, go_tool

BASE = ROOT / "docker-compose.yml"
KIS_OVERRIDE = ROOT / "docker-compose.kis.yml"
KIS_ENV_EXAMPLE = ROOT / "kis.env.example"
IMAGE = "kis-stream:local"


@functools.cache
def compose_schema() -> dict[str, Any]:
    done = subprocess.run(
        [go_tool("compose-check"), "--schema"], capture_output=True, text=True, check=True
    )
    schema: dict[str, Any] = json.loads(done.stdout)
    return schema


def load_project(
    *files: Path, profiles: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [go_tool("compose-check")]
    for profile in profiles:
        args += ["--profile", profile]
    args += [str(f) for f in files]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "COMPOSE_"))}
    clean.pop("TOPIC_PARTITIONS", None)
    return subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env={**clean, **(env or {})}
    )


@functools.cache
def project(scenario: str) -> dict[str, Any]:
    """The project compose-go loads for a scenario (as `docker compose config` would)."""
    if scenario == "simulator":
        done = load_project(BASE)
    elif scenario == "tools":
        done = load_project(BASE, profiles=("tools",))
    elif scenario == "real-kis":
        done = load_project(BASE, KIS_OVERRIDE, env={"KIS_ENV_FILE": str(KIS_ENV_EXAMPLE)})
    else:
        raise ValueError(scenario)
    assert done.returncode == 0, f"compose-go rejected the {scenario} project:\n{done.stderr}"
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


SCENARIOS = ["simulator", "tools", "real-kis"]


def dockerfile_entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form ENTRYPOINT"
    entrypoint: list[str] = json.loads(match.group(1))
    return entrypoint


def argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or dockerfile_entrypoint()
    return [*entrypoint, *(service.get("command") or [])]


def own_services(loaded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in loaded["services"].items() if s.get("image") == IMAGE}


# --- schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BASE, KIS_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_misspelt_key() -> None:
    document = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(document)
    broken["services"]["producer"]["helthcheck"] = broken["services"]["producer"]["healthcheck"]
    validator = jsonschema.Draft202012Validator(compose_schema())
    assert not list(validator.iter_errors(document))
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_compose_go_loads_the_project(scenario: str) -> None:
    loaded = project(scenario)
    assert {"kafka", "registry", "registry-init", "producer", "processors", "kafka-ui"} <= set(
        loaded["services"]
    )


def test_compose_go_rejects_an_inconsistent_project(tmp_path: Path) -> None:
    broken = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    broken["services"]["producer"]["depends_on"]["no-such-service"] = {
        "condition": "service_started"
    }
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = load_project(path)
    assert done.returncode != 0
    assert "no-such-service" in done.stderr


# --- the services ------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_kis_stream_service_runs_a_real_subcommand(scenario: str) -> None:
    services = own_services(project(scenario))
    assert services
    problems = []
    for name, service in services.items():
        args = argv(service)
        if args[0] != "kis-stream":
            problems.append(f"{name}: runs {args[0]!r}, not kis-stream")
            continue
        problems += cli_problems(f"service {name}", args[1:])
    assert not problems, "\n".join(problems)


def test_simulator_run_has_every_pipeline_role() -> None:
    roles = {argv(s)[1] for s in own_services(project("simulator")).values()}
    assert roles == {"sim", "produce", "process"}


def test_tools_profile_adds_tail() -> None:
    tail = project("tools")["services"]["tail"]
    assert argv(tail)[:2] == ["kis-stream", "tail"]
    assert "tail" not in project("simulator")["services"]


def test_start_order_follows_health() -> None:
    services = project("simulator")["services"]
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if dep["condition"] == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )
            if dep["condition"] == "service_completed_successfully":
                assert services[target].get("restart") in (None, "no"), target
    producer, processors = services["producer"]["depends_on"], services["processors"]["depends_on"]
    assert producer["kafka"]["condition"] == "service_healthy"
    assert producer["registry-init"]["condition"] == "service_completed_successfully"
    assert producer["simulator"]["condition"] == "service_healthy"
    assert processors["producer"]["condition"] == "service_healthy"
    assert services["registry"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def _healthcheck_url(service: dict[str, Any]) -> str:
    text = " ".join(service["healthcheck"]["test"])
    match = re.search(r"https?://[^'\" ]+", text)
    assert match, text
    return match.group(0)


def test_addresses_agree_across_services() -> None:
    services = project("simulator")["services"]
    kafka_env = services["kafka"]["environment"]
    internal = {
        listener.split("://")[0]: listener.split("://")[1]
        for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }[kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    registry_api = "http://registry:8080/apis/ccompat/v7"
    for name, service in own_services(project("simulator")).items():
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP"] == internal, name
        assert env["SCHEMA_REGISTRY_URL"] == registry_api, name
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_SCHEMAREGISTRY"] == registry_api
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == internal
    assert f"api={registry_api}" in services["registry-init"]["command"][0]
    assert any(p["target"] == 8080 for p in services["registry"]["ports"])

    sim_args = argv(services["simulator"])
    sim_port = int(sim_args[sim_args.index("--port") + 1])
    assert sim_args[sim_args.index("--host") + 1] == "0.0.0.0"
    producer = services["producer"]
    kis_url = urlsplit(producer["environment"]["KIS_URL"])
    assert (kis_url.hostname, kis_url.port) == ("simulator", sim_port)
    assert urlsplit(_healthcheck_url(services["simulator"])).port == sim_port
    symbols = sim_args[sim_args.index("--symbols") + 1]
    assert symbols == producer["environment"]["KIS_SYMBOLS"]  # the market has what is asked

    assert producer["environment"]["METRICS_HOST"] == "0.0.0.0"
    metrics_port = int(producer["environment"]["METRICS_PORT"])
    assert urlsplit(_healthcheck_url(producer)).port == metrics_port
    assert urlsplit(_healthcheck_url(producer)).path == "/readyz"

    processors = services["processors"]
    assert processors["environment"]["PROCESSORS_WEB_HOST"] == "0.0.0.0"
    web_port = int(processors["environment"]["PROCESSORS_WEB_PORT"])
    assert urlsplit(_healthcheck_url(processors)).port == web_port
    assert urlsplit(_healthcheck_url(processors)).path == "/kis/"  # processors/views.py


def test_writable_state_lives_on_volumes() -> None:
    services = project("simulator")["services"]
    producer, processors = services["producer"], services["processors"]
    spool = producer["environment"]["PRODUCER_SPOOL_DIR"]
    assert spool in {v["target"] for v in producer["volumes"]}
    assert any(v["type"] == "volume" and v["target"] == spool for v in producer["volumes"])
    data_dir = processors["environment"]["PROCESSORS_DATA_DIR"]
    assert data_dir in {v["target"] for v in processors["volumes"]}


def test_kis_stream_containers_are_hardened() -> None:
    for name, service in own_services(project("tools")).items():
        assert service.get("read_only") is True, name
        assert "ALL" in service.get("cap_drop", []), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "/tmp" in service.get("tmpfs", []), name


def test_published_ports_bind_loopback_only() -> None:
    for name, service in project("tools")["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_processors_can_scale() -> None:
    processors = project("simulator")["services"]["processors"]
    assert "container_name" not in processors
    assert all(not p.get("published") for p in processors.get("ports", []))


def test_kafka_image_is_the_local_broker_version() -> None:
    """Compose runs the Kafka release the local broker (and so the test suite) runs."""
    versions = set()
    pom = ROOT / "scripts" / "kafka" / "pom.xml"
    if pom.exists():
        versions |= set(re.findall(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text()))
    services = ROOT / "kis_stream" / "services.py"
    if services.exists():
        versions |= set(re.findall(r'^KAFKA_VERSION\s*=\s*"([^"]+)"', services.read_text(), re.M))
    assert versions, "no local Kafka version found (scripts/kafka/pom.xml, kis_stream/services.py)"
    image = project("simulator")["services"]["kafka"]["image"]
    assert {image} == {f"apache/kafka:{v}" for v in versions}


def test_registry_image_is_the_local_registry_version() -> None:
    """Compose runs the Apicurio release `make services-up` runs (same ccompat behaviour)."""
    text = (ROOT / "kis_stream" / "services.py").read_text(encoding="utf-8")
    match = re.search(r'^APICURIO_VERSION\s*=\s*"([^"]+)"', text, re.M)
    assert match, "kis_stream/services.py names no APICURIO_VERSION"
    image = project("simulator")["services"]["registry"]["image"]
    assert image == f"apicurio/apicurio-registry:{match.group(1)}"


# --- real KIS ----------------------------------------------------------------------------


def test_real_kis_override_drops_the_simulator() -> None:
    services = project("real-kis")["services"]
    assert "simulator" not in services
    producer = services["producer"]
    assert producer["environment"]["KIS_URL"] == ""  # blank = unset = the real KIS servers
    assert producer["environment"]["KIS_APP_KEY"].startswith("replace-with")
    assert producer["depends_on"]["simulator"]["required"] is False


def test_real_kis_override_requires_the_credentials_file(tmp_path: Path) -> None:
    done = load_project(BASE, KIS_OVERRIDE, env={"KIS_ENV_FILE": str(tmp_path / "missing.env")})
    assert done.returncode != 0
    assert "missing.env" in done.stderr


def test_credentials_example_holds_placeholders_only() -> None:
    values = {}
    for line in KIS_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    assert {"KIS_APP_KEY", "KIS_APP_SECRET"} <= set(values)
    assert values["KIS_APP_KEY"].startswith("replace-with")
    assert values["KIS_APP_SECRET"].startswith("replace-with")
    assert "kis.env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


# --- Dockerfile --------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_dockerfile_is_slim_and_non_root() -> None:
    text = _dockerfile()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases and all(b.startswith("python:${PYTHON_VERSION}-slim") for b in bases)
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (Kubernetes runAsNonRoot)"
    assert dockerfile_entrypoint() == ["kis-stream"]
    assert "pip install --no-index --find-links=/wheels kis-stream" in text


def _dockerignore_includes(path: str) -> bool:
    """Docker's rule: the last matching .dockerignore pattern decides; `!` re-includes."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(regex + "(/.*)?", path):
            included = negate
    return included


def test_dockerfile_copies_every_package_and_nothing_else() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"packages = \[([^\]]*)\]", pyproject)
    assert match
    packages = re.findall(r'"([^"]+)"', match.group(1))
    copied = {src.rstrip("/") for src in re.findall(r"^COPY\s+(\S+)\s", _dockerfile(), re.M)}
    copied |= set(re.findall(r"^COPY\s+pyproject\.toml\s+(\S+)", _dockerfile(), re.M))
    for package in packages:
        assert package in copied, f"Dockerfile does not COPY {package}/"
        assert _dockerignore_includes(package), f".dockerignore excludes {package}/"
        assert _dockerignore_includes(f"{package}/x.py")
    for needed in ("pyproject.toml", "README.md"):
        assert _dockerignore_includes(needed)
    for noise in (".venv", ".git", ".local", "tests", "k8s", "kis.env"):
        assert not _dockerignore_includes(noise), f"{noise} would enter the build context"
    assert not _dockerignore_includes("producer/__pycache__/x.pyc")
