"""`kis-stream process` against the real broker: start-up checks and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def _topics(bootstrap: str, counts: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, p, 1) for n, p in counts.items()]).values():
        future.result(30)


def _env(services: Any, prefix: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KAFKA_BOOTSTRAP=services.bootstrap)
    env.update(
        SCHEMA_REGISTRY_URL=services.registry_url,
        TOPIC_PREFIX=prefix,
        PROCESSORS_APP_ID=f"cli-{prefix.strip('.')}",
        PROCESSORS_DATA_DIR=str(tmp / "faust"),
        PROCESSORS_TOPIC_WAIT="20",
    )
    env.update(extra)
    return env


def _process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kis_stream.cli", "process", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_refuses_to_run_when_the_book_topics_are_not_co_partitioned(
    services: Any, tmp_path: Path
) -> None:
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    _topics(services.bootstrap, {f"{prefix}h0stasp0": 3, f"{prefix}h0nxasp0": 2})
    proc = _process(_env(services, prefix, tmp_path), "--streams", "spread", "--without-web")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"{prefix}h0stasp0 (KRX books) and {prefix}h0nxasp0 (NXT books)" in output
    assert "same partition count" in output
    assert "Traceback" not in output


def test_waits_for_missing_input_topics_then_says_which(services: Any, tmp_path: Path) -> None:
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    env = _env(services, prefix, tmp_path, PROCESSORS_TOPIC_WAIT="2")
    proc = _process(env, "--streams", "program", "--without-web")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"input topics missing after 2s: {prefix}h0nxpgm0, {prefix}h0stpgm0" in output


def test_serves_views_logs_at_once_and_stops_cleanly_on_sigterm(
    services: Any, tmp_path: Path
) -> None:
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    _topics(services.bootstrap, {f"{prefix}h0stasp0": 2, f"{prefix}h0nxasp0": 2})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(services, prefix, tmp_path, PROCESSORS_LOG_LEVEL="info")
    proc = _process(env, "--streams", "spread", "--web-port", str(port))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "".join(lines)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/kis/", timeout=2) as reply:
                    assert b'"spread"' in reply.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the web views never answered"
                time.sleep(0.5)
        # The worker's log reaches a pipe as it is written, not when a block fills up (or
        # never, for a killed worker): Faust's "Ready" line is there while it still runs.
        deadline = time.monotonic() + 30
        while not any("[^Worker]: Ready" in line for line in list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
