"""Commits through hand-overs: every input partition ends committed to its end.

Seen once in sessions 2/3: an input partition that received no records after a hand-over
stayed uncommitted behind its end on the worker owning it (a restart read it again). Here
workers of `kis-stream process --streams program` hand partitions over (a worker joins,
leaves, is killed) while records arrive, which then stop (every partition idle after the
hand-over), and the group's committed offsets must reach every partition's end each time.
KRX records are program updates (each one changes the tables: changelog traffic for the
standbys); NXT records are undecodable bytes, which the agent counts and acknowledges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.e2e import harness

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PARTITIONS = 2
CATCH_UP_S = 60.0
SOUGHT = "sought to the group's committed offsets"  # (faust_fixes: once per rebalance)


def _produce(
    bootstrap: str, updates: harness.ProgramUpdates, topic: str, partition: int, count: int
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for _ in range(count):
        producer.produce(topic, value=updates.value(topic, partition), partition=partition)
    assert producer.flush(30) == 0


class Workers:
    """`kis-stream process` children, all stopped when the test ends."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()

    def start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the child)
        args = [sys.executable, "-m", "kis_stream.cli", "process", "--streams", "program"]
        self.procs[name] = subprocess.Popen(
            [*args, "--without-web"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def stop(self, name: str) -> None:
        self.stopped.add(name)
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: no commit, no flush; the group hands its partitions over after the
        session timeout."""
        self.stopped.add(name)
        self.procs[name].kill()
        self.procs[name].wait()

    def wait_for(self, name: str, text: str, timeout: float = 90.0) -> None:
        """Until the worker's log shows `text` (e.g. it took part in a rebalance)."""
        deadline = time.monotonic() + timeout
        while text not in (self.logs / f"{name}.log").read_text(errors="replace"):
            assert self.procs[name].poll() is None, self.tail(name)
            assert time.monotonic() < deadline, f"{name}: no {text!r}\n{self.tail(name)}"
            time.sleep(0.2)

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for name in self.procs:
            self.stop(name)


@pytest.fixture
def setup(services: Any, tmp_path: Path) -> Iterator[tuple[Workers, str, list[str]]]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"commits{tag}."
    inputs = [f"{prefix}h0stpgm0", f"{prefix}h0nxpgm0", f"{prefix}h0unpgm0"]  # (UN: empty)
    harness.create_topics(services.bootstrap, inputs, PARTITIONS)
    app_id = f"commits-{tag}"
    env = dict(os.environ, KAFKA_BOOTSTRAP=services.bootstrap)
    env.update(
        SCHEMA_REGISTRY_URL=services.registry_url,
        TOPIC_PREFIX=prefix,
        PROCESSORS_APP_ID=app_id,
        PROCESSORS_DATA_DIR=str(tmp_path / "faust"),
        PROCESSORS_TOPIC_WAIT="30",
        PROCESSORS_SESSION_TIMEOUT="10",
        PROCESSORS_LOG_LEVEL=os.environ.get("E2E_COMMITS_LOG_LEVEL", "info"),
    )
    workers = Workers(env, tmp_path)
    try:
        yield workers, app_id, [*inputs, f"{app_id}-program-by-venue"]
    finally:
        workers.stop_all()


class Feed:
    """Records to every partition of `topics` every 20 ms, until stopped."""

    def __init__(self, bootstrap: str, updates: harness.ProgramUpdates, topics: list[str]) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.updates, self.topics = updates, topics
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.02):
            for topic in self.topics:
                for partition in range(PARTITIONS):
                    value = self.updates.value(topic, partition)
                    self.producer.produce(topic, value=value, partition=partition)
            self.producer.poll(0)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)
        assert self.producer.flush(30) == 0


def _wait_committed(
    services: Any, workers: Workers, group: str, topics: list[str], what: str
) -> None:
    deadline = time.monotonic() + CATCH_UP_S
    while lag := harness.lag_or_unknown(services.bootstrap, group, topics):
        for name, proc in workers.procs.items():
            assert proc.poll() is None or name in workers.stopped, workers.tail(name)
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{workers.tail(n)}" for n in workers.procs)
            pytest.fail(f"{what}: not committed to the end after {CATCH_UP_S:.0f} s: {lag}\n{logs}")
        time.sleep(1)


def test_partitions_idle_after_a_hand_over_are_committed_to_their_end(
    services: Any, setup: tuple[Workers, str, list[str]]
) -> None:
    workers, group, topics = setup
    krx, nxt = topics[0], topics[1]
    updates = harness.ProgramUpdates(services.registry_url, krx)
    for topic in (krx, nxt):
        for partition in range(PARTITIONS):
            _produce(services.bootstrap, updates, topic, partition, 30)
    workers.start("a")
    _wait_committed(services, workers, group, topics, "one worker")

    # Records arrive while the second worker joins (read, maybe not committed, by the first
    # when the partitions move), then none any more: every partition is idle after it.
    feed = Feed(services.bootstrap, updates, [krx, nxt])
    try:
        workers.start("b")
        workers.wait_for("b", SOUGHT)
    finally:
        feed.stop()
    _wait_committed(services, workers, group, topics, "after the second worker joined")

    # The same when it leaves: everything goes back to the first worker.
    feed = Feed(services.bootstrap, updates, [krx, nxt])
    try:
        time.sleep(1.0)
        workers.stop("b")
    finally:
        feed.stop()
    _wait_committed(services, workers, group, topics, "after the second worker left")

    # A worker killed while records arrive: its partitions go back after the session timeout.
    workers.start("c")
    workers.wait_for("c", SOUGHT)
    feed = Feed(services.bootstrap, updates, [krx, nxt])
    try:
        time.sleep(1.5)
        workers.kill("c")
    finally:
        feed.stop()
    _wait_committed(services, workers, group, topics, "after a worker was killed")
