"""`kis-stream demo` (what `make demo` runs): derived streams arrive, and nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _kill_leftovers(text: str) -> None:
    for line in _processes_mentioning(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def test_demo_shows_derived_streams_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "KAFKA_", "SCHEMA_"))}
    args = ["demo", "--duration", "60", "--no-view", "--workdir", str(workdir)]
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT below dumps every thread's stack
    proc = subprocess.Popen(
        [sys.executable, "-m", "kis_stream.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # where it hangs, for the failure message
        stdout, stderr = proc.communicate()
        _kill_leftovers(str(workdir))
        pytest.fail(f"the demo did not stop within 240 s\n{stdout}\n{stderr}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in workdir.glob("*.log")
    )
    assert result.returncode == 0, result.stdout + result.stderr + logs
    match = re.search(r"derived records received: (\d+)", result.stdout)
    assert match, result.stdout
    assert int(match.group(1)) > 0, logs
    # the simulator, producer, processors and the JVMs all ran with paths under workdir
    assert _processes_mentioning(str(workdir)) == []
