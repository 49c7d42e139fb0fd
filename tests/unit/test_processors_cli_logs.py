"""The worker's log reaches a pipe line by line (processors/cli.py `log_lines_at_once`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

PROGRAM = """
import sys, time
from processors.cli import log_lines_at_once
if sys.argv[1] == "on":
    log_lines_at_once()
print("a log line", flush=False)
time.sleep(30)
"""


def _first_line_while_running(mode: str, wait_s: float) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as on a host
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, mode], stdout=subprocess.PIPE, text=True, env=env
    )
    got: list[str] = []
    reader = threading.Thread(
        target=lambda: got.append(proc.stdout.readline() if proc.stdout else "")
    )
    reader.start()
    reader.join(wait_s)  # the line, or still nothing while the program sleeps
    proc.kill()
    proc.wait()
    reader.join(5)
    return got[0] if got else ""


@pytest.mark.parametrize(("mode", "seen", "wait_s"), [("on", True, 30.0), ("off", False, 5.0)])
def test_a_line_is_in_the_pipe_as_soon_as_it_is_printed(
    mode: str, seen: bool, wait_s: float
) -> None:
    line = _first_line_while_running(mode, wait_s)
    # "off" shows what the worker did before: the line sat in the buffer and died with it
    assert (line == "a log line\n") is seen, repr(line)
