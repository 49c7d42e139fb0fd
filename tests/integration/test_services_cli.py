"""`kis-stream services up/status/down` as `make services-up/-down` run them: real JVMs that
outlive the command, addresses in services.env, and nothing left after `down`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kis_stream.services import pid_alive, read_env_file

pytestmark = pytest.mark.kafka


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as `make` runs it: from the checkout, state in the relative `.local`."""
    return subprocess.run(
        [sys.executable, "-m", "kis_stream.cli", "services", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_up_writes_addresses_that_answer_and_down_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / ".local"
    up = _cli(tmp_path, "up")
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        pids = [int((state / f"{name}.pid").read_text()) for name in ("kafka", "registry")]
        assert all(pid_alive(pid) for pid in pids), "the services must outlive `up`"

        env = read_env_file(state / "services.env")
        assert set(env) == {"KAFKA_BOOTSTRAP", "SCHEMA_REGISTRY_URL"}
        assert env["KAFKA_BOOTSTRAP"].startswith("127.0.0.1:")
        assert env["SCHEMA_REGISTRY_URL"].endswith("/apis/ccompat/v7")
        metadata = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP"]}).list_topics(
            timeout=10
        )
        assert metadata.brokers

        status = _cli(tmp_path, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" up ") == 2

        again = _cli(tmp_path, "up")
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = _cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout and "registry" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
    assert not (state / "services.env").exists()
    assert _cli(tmp_path, "status").returncode == 1
