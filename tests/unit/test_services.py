"""kis_stream.services without a broker: Java discovery, fetch caching and errors, config,
process-group shutdown, the parent-death safety net, and the CLI's pid handling."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kis_stream import services as svc


def _fake_executable(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_java(folder: Path, version: str) -> Path:
    return _fake_executable(folder, "java", f"echo 'openjdk version \"{version}\" 2025' >&2\n")


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not svc.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25.0.3" 2026-04-21 LTS', 25),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_is_read_from_version_output(output: str, major: int | None) -> None:
    assert svc.parse_java_major(output) == major


@pytest.fixture
def no_system_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Only the fake javas a test creates in the returned folder are visible."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("KIS_STREAM_REGISTRY_JAVA", raising=False)
    monkeypatch.setattr(svc, "JAVA_INSTALL_GLOBS", (str(tmp_path / "jvm" / "*" / "bin" / "java"),))
    return tmp_path


def test_find_java_skips_too_old_and_takes_the_first_new_enough(no_system_java: Path) -> None:
    _fake_java(no_system_java / "bin", "17.0.2")
    newer = _fake_java(no_system_java / "jvm" / "jdk-21" / "bin", "21.0.4")
    _fake_java(no_system_java / "jvm" / "jdk-25" / "bin", "25.0.1")
    assert svc.find_java(21, "KIS_STREAM_REGISTRY_JAVA", "the registry") == str(newer)
    assert svc.find_java(17, "KIS_STREAM_REGISTRY_JAVA", "the broker").endswith("bin/java")


def test_find_java_explains_what_it_found_when_nothing_fits(no_system_java: Path) -> None:
    _fake_java(no_system_java / "bin", "17.0.2")
    with pytest.raises(svc.ServicesError) as raised:
        svc.find_java(21, "KIS_STREAM_REGISTRY_JAVA", "Apicurio Registry")
    message = str(raised.value)
    assert "Apicurio Registry needs Java 21+" in message
    assert "(Java 17)" in message and "KIS_STREAM_REGISTRY_JAVA" in message


def test_find_java_override_must_be_new_enough(
    no_system_java: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _fake_java(no_system_java / "old" / "bin", "11.0.20")
    monkeypatch.setenv("KIS_STREAM_REGISTRY_JAVA", str(old))
    with pytest.raises(svc.ServicesError, match="is Java 11"):
        svc.find_java(21, "KIS_STREAM_REGISTRY_JAVA", "the registry")
    good = _fake_java(no_system_java / "good" / "bin", "21.0.1")
    monkeypatch.setenv("KIS_STREAM_REGISTRY_JAVA", str(good))
    assert svc.find_java(21, "KIS_STREAM_REGISTRY_JAVA", "the registry") == str(good)


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KIS_STREAM_CACHE", str(cache))
    return cache


def test_cache_folder_follows_the_environment(empty_cache: Path) -> None:
    assert svc.cache_dir() == empty_cache
    assert svc.kafka_home() == empty_cache / f"kafka-{svc.KAFKA_VERSION}"
    assert svc.registry_home().parent == empty_cache


def test_fetch_without_maven_says_so(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(empty_cache / "nothing-here"))
    with pytest.raises(svc.ServicesError, match=r"Maven \(`mvn`\) is not on PATH"):
        svc.fetch()


def test_fetch_reports_a_failed_download_with_mavens_output(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "fake-bin"
    _fake_executable(bin_dir, "mvn", "echo 'Could not transfer artifact kafka_2.13'\nexit 1\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(svc.ServicesError) as raised:
        svc.fetch()
    assert "Could not transfer artifact kafka_2.13" in str(raised.value)
    assert "exit code 1" in str(raised.value)
    assert not svc.kafka_home().exists(), "a failed fetch must not look complete"
    assert [p.name for p in empty_cache.iterdir()] == [".lock"], "no scratch folder is left"


def test_fetch_reuses_a_complete_cache_without_running_maven(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for home, pom in (
        (svc.kafka_home(), svc.SCRIPTS / "kafka" / "pom.xml"),
        (svc.registry_home(), svc.SCRIPTS / "registry" / "pom.xml"),
    ):
        home.mkdir(parents=True)
        (home / ".complete").write_text(svc._stamp(pom) + "\n")
    monkeypatch.setenv("PATH", str(empty_cache / "no-maven"))
    results = svc.fetch()
    assert [r.cached for r in results] == [True, True]


def test_fetch_refetches_when_the_pom_changed(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = svc.kafka_home()
    home.mkdir(parents=True)
    (home / ".complete").write_text("stamp-of-an-older-pom\n")
    monkeypatch.setenv("PATH", str(empty_cache / "no-maven"))
    with pytest.raises(svc.ServicesError, match="Maven"):
        svc.fetch()


def test_kafka_properties_describe_one_loopback_kraft_node(tmp_path: Path) -> None:
    props = svc.kafka_properties(tmp_path / "data", 19092, 19093)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    auto = svc.kafka_properties(tmp_path, 1, 2, auto_create_topics=True)
    assert auto["auto.create.topics.enable"] == "true"


def test_cluster_ids_are_16_random_bytes_in_url_safe_base64() -> None:
    ids = {svc.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and "=" not in cluster_id
        assert not cluster_id.startswith("-"), "the storage tool would read it as an option"
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_free_port_can_be_bound_on_loopback() -> None:
    port = svc.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
    assert not svc.port_open(port)


def test_env_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / ".local" / "services.env"
    values = {"KAFKA_BOOTSTRAP": "127.0.0.1:1", "SCHEMA_REGISTRY_URL": "http://x/apis/ccompat/v7"}
    svc.write_env_file(path, values)
    path.write_text("# comment\n\n" + path.read_text())
    assert svc.read_env_file(path) == values


def _group(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_terminate_group_stops_the_leader_and_its_children() -> None:
    proc = _group("sleep 300 & sleep 300 & wait")
    deadline = time.monotonic() + 5
    while len(_child_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = _child_pids(proc.pid)
    assert len(children) == 2
    svc.terminate_group(proc.pid, timeout=5)
    proc.wait(5)
    assert all(_wait_gone(child) for child in children)


def test_terminate_group_kills_what_ignores_sigterm() -> None:
    proc = _group("trap '' TERM; echo ready; while :; do sleep 0.1; done")
    time.sleep(0.3)
    svc.terminate_group(proc.pid, timeout=0.5)
    assert proc.wait(5) == -signal.SIGKILL


def test_spawned_services_are_stopped_by_the_exit_safety_net(tmp_path: Path) -> None:
    proc = svc._spawn("probe", ["sleep", "300"], cwd=tmp_path, log_path=tmp_path / "probe.log")
    assert proc in svc._LIVE and proc.alive()
    svc.stop_all()
    assert not proc.alive() and proc not in svc._LIVE


def test_a_service_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: what keeps a SIGKILLed pytest from leaving JVMs behind."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    started: list[svc.ServiceProcess] = []
    worker = threading.Thread(
        target=lambda: started.append(
            svc._spawn("probe", ["sleep", "300"], cwd=tmp_path, log_path=tmp_path / "p.log")
        )
    )
    worker.start()
    worker.join()
    proc = started[0]
    try:
        assert proc.popen.wait(10) == -signal.SIGTERM
    finally:
        proc.stop(timeout=1)


def test_detached_services_outlive_their_starter(tmp_path: Path) -> None:
    started: list[svc.ServiceProcess] = []
    worker = threading.Thread(
        target=lambda: started.append(
            svc._spawn(
                "probe",
                ["sleep", "300"],
                cwd=tmp_path,
                log_path=tmp_path / "p.log",
                die_with_parent=False,
            )
        )
    )
    worker.start()
    worker.join()
    proc = started[0]
    try:
        assert proc not in svc._LIVE
        time.sleep(0.5)
        assert proc.alive()
    finally:
        svc.terminate_group(proc.pid, timeout=2)
        proc.popen.wait(5)


def test_down_never_signals_a_process_that_is_not_ours(tmp_path: Path) -> None:
    state = tmp_path / ".local"
    state.mkdir()
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (state / "kafka.pid").write_text(f"{stranger.pid}\n")
        (state / "registry.pid").write_text("not a pid\n")
        (state / "services.env").write_text("KAFKA_BOOTSTRAP=127.0.0.1:1\n")
        result = CliRunner().invoke(svc.services, ["down", "--state-dir", str(state)])
        assert result.exit_code == 0, result.output
        assert "nothing was running" in result.output
        assert stranger.poll() is None, "a reused pid must not be killed"
        assert not (state / "kafka.pid").exists() and not (state / "services.env").exists()
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait(5)


def test_status_fails_when_nothing_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(svc.services, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "kafka" in result.output and "down" in result.output
