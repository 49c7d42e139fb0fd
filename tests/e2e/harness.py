"""What the end-to-end modules share: child processes, the simulator's URL, group lag.

Kept apart from the oracle (tests/e2e/processors_oracle.py): these only run and watch the
pipeline, they compute nothing the assertions compare.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema

from kis_stream.services import free_port as free_port  # (for the test modules)
from processors.codec import registry_client
from producer.avro import ConfluentEncoder, load_raw_schema
from producer.catalogue import load_catalogue

SYMBOLS = "005930,000660"
MAX_AGE_MS = 5_000.0
"""The workers' spread staleness bound (`PROCESSORS_SPREAD_MAX_AGE_MS`), for the oracle."""
RAW_TRS = ("H0STCNT0", "H0NXCNT0", "H0UNCNT0", "H0STASP0", "H0NXASP0", "H0UNASP0")
RAW_TRS += ("H0STPGM0", "H0NXPGM0", "H0UNPGM0")
STREAMS = ("bars.1s", "book.imbalance", "program.netbuy", "spread.krx_nxt")


def cli(*args: str) -> list[str]:
    """The `kis-stream` command line, run by this interpreter."""
    return [sys.executable, "-m", "kis_stream.cli", *args]


class Processes:
    """Child processes, all stopped (SIGKILL if need be) when the fixture ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (owned by the process)
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 30) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, timeout=10)

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def check_running(self, names: list[str]) -> None:
        """Fail at once if one of these processes has exited (it will never catch up)."""
        for name in names:
            code = self.procs[name].poll()
            assert code is None, f"{name} exited with code {code}; its log ends:\n{self.tail(name)}"

    def wait_for(self, name: str, text: str, timeout: float = 90.0) -> None:
        """Until `name`'s log shows `text`, failing if it exits first."""
        deadline = time.monotonic() + timeout
        while text not in (self.logs / f"{name}.log").read_text(errors="replace"):
            self.check_running([name])
            assert time.monotonic() < deadline, f"{name}: no {text!r}\n{self.tail(name)}"
            time.sleep(0.2)

    def sleep_until(self, until: float, watch: list[str]) -> None:
        """Sleep until `until` (monotonic), failing as soon as a watched process exits."""
        while (left := until - time.monotonic()) > 0:
            self.check_running(watch)
            time.sleep(min(left, 0.5))
        self.check_running(watch)


def sim_url(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """The URL a `kis-stream sim --port 0` child printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "KIS_URL=" in line:
                return line.split("KIS_URL=", 1)[1].strip()
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError("the simulator did not print its URL")


def end_offsets(bootstrap: str, topics: list[str]) -> int:
    """The sum of the end offsets of these topics' partitions (missing topics count 0)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-watch"})
    try:
        total = 0
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None:
                continue
            for partition in meta.partitions:
                total += consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )[1]
        return total
    finally:
        consumer.close()


def lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Per `topic[partition]`, records the group has not committed yet (0s left out; a
    topic that does not exist yet is -1)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10)
        behind = {topic: -1 for topic in topics if topic not in metadata.topics}
        tps = [
            TopicPartition(topic, partition)
            for topic in topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]
        for tp in consumer.committed(tps, timeout=10):
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if end > max(tp.offset, 0):
                behind[f"{tp.topic}[{tp.partition}]"] = end - max(tp.offset, 0)
        return behind
    finally:
        consumer.close()


def lag_or_unknown(bootstrap: str, group: str, topics: list[str]) -> dict[str, Any]:
    """`lag`, or why it cannot be known yet (e.g. NOT_COORDINATOR while the group loads)."""
    try:
        return lag(bootstrap, group, topics)
    except KafkaException as exc:
        return {"unknown": str(exc)}


def counters(port: int) -> dict[str, Any]:
    """A worker's `/kis/` view: its agents' counters and offset gaps."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/kis/", timeout=5) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


def start_market(
    procs: Processes, base: dict[str, str], prefix: str, start: str, seed: int
) -> None:
    """The simulator at x20 from `start` (KST), and the producer writing to `prefix` topics."""
    sim_args = ["--port", "0", "--start", start, "--speed", "20", "--seed", str(seed)]
    sim = procs.start("sim", cli("sim", *sim_args, "--symbols", SYMBOLS), base)
    producer_env = dict(
        base,
        KIS_URL=sim_url(procs.logs / "sim.log", sim),
        KIS_SYMBOLS=SYMBOLS,
        KIS_VENUES="KRX,NXT,UN",
        KIS_TR_GROUPS="trades,books,program",
        TOPIC_PREFIX=prefix,
        PRODUCER_SPOOL_DIR=str(procs.logs / "spool"),
        METRICS_PORT="0",
        KIS_SUBSCRIBE_INTERVAL_S="0",
    )
    procs.start("producer", cli("produce", "--env-file", "/dev/null"), producer_env)


def worker_env(
    base: dict[str, str], prefix: str, output_prefix: str, app_id: str, port: int, data: Path
) -> dict[str, str]:
    """A `kis-stream process` worker on the `prefix` raw topics."""
    return dict(
        base,
        TOPIC_PREFIX=prefix,
        PROCESSORS_OUTPUT_PREFIX=output_prefix,
        PROCESSORS_APP_ID=app_id,
        PROCESSORS_WEB_PORT=str(port),
        PROCESSORS_DATA_DIR=str(data),
        PROCESSORS_BAR_GRACE="0.5",
        PROCESSORS_SPREAD_MAX_AGE_MS=str(MAX_AGE_MS),
        PROCESSORS_TOPIC_WAIT="60",
        PROCESSORS_SESSION_TIMEOUT="10",
    )


def wait_until_settled(
    procs: Processes,
    workers: list[str],
    bootstrap: str,
    inputs: dict[str, list[str]],
    outputs: list[str],
    deadline: float,
) -> None:
    """Wait until each group (`inputs`: group -> its input topics) has committed all its
    input, then until the outputs stop growing (the grace timer publishes the last bars)."""
    for group, topics in inputs.items():
        while behind := lag_or_unknown(bootstrap, group, topics):
            procs.check_running(workers)
            assert time.monotonic() < deadline, f"{group} did not catch up: {behind}"
            time.sleep(1)
    previous, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        procs.check_running(workers)
        total = end_offsets(bootstrap, outputs)
        if total != previous:
            previous, stable_since = total, time.monotonic()
        elif time.monotonic() - stable_since > 5:
            break
        time.sleep(1)
    procs.check_running(workers)


def workdir(tmp_path_factory: Any, name: str) -> Path:
    """Where the children log; E2E_PROCESSORS_WORKDIR keeps it for debugging a failure."""
    work = Path(os.environ.get("E2E_PROCESSORS_WORKDIR") or tmp_path_factory.mktemp(name))
    work.mkdir(parents=True, exist_ok=True)
    return work


def base_env(services: Any) -> dict[str, str]:
    """This environment, pointed at the test session's broker and registry."""
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP=services.bootstrap,
        SCHEMA_REGISTRY_URL=services.registry_url,
    )


class PausableProxy:
    """A TCP forwarder on a free loopback port; `pause()` cuts every connection and refuses
    new ones (closed as soon as accepted) until `resume()`: a service outage on demand,
    for a service that would lose its state if stopped (the in-memory registry)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.paused = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.paused.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open -= {src, dst}

    def pause(self) -> None:
        self.paused.set()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def resume(self) -> None:
        self.paused.clear()

    def close(self) -> None:
        self._closed = True
        self.pause()
        self.server.close()


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(name, partitions, 1) for name in names]
    for future in admin.create_topics(topics).values():
        future.result(30)


class ProgramUpdates:
    """Program updates for the KRX topic (Confluent wire format), or junk for the others."""

    def __init__(self, registry_url: str, krx: str) -> None:
        schema = load_raw_schema("H0STPGM0")
        registry = registry_client(registry_url)
        schema_id = registry.register_schema(f"{krx}-value", Schema(json.dumps(schema), "AVRO"))
        self.encoder = ConfluentEncoder(schema, schema_id)
        self.columns = [f.column for f in load_catalogue()["H0STPGM0"].fields]
        self.krx = krx
        self.net = 0

    def value(self, topic: str, partition: int) -> bytes:
        if topic != self.krx:
            return b"not avro"
        self.net += 1
        record: dict[str, Any] = dict.fromkeys(self.columns)
        record.update(
            tr_id="H0STPGM0",
            venue="KRX",
            session="s1",
            seq=self.net,
            index=0,
            extra_fields=None,
            event_time=1_763_694_000_000,  # 2025-11-21 12:00 KST
            received_at=self.net,
            symbol=f"{partition:03d}{self.net % 7:03d}",
            seln_cnqn=0,
            shnu_cnqn=self.net,
            seln_tr_pbmn=0,
            shnu_tr_pbmn=self.net * 10,
            ntby_cnqn=self.net,
            ntby_tr_pbmn=self.net * 10,
        )
        return self.encoder.encode(record)
