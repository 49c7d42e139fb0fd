"""A real local Kafka broker and schema registry, fetched with Maven and run as child processes.

Nothing about a Kafka pipeline is proven until records cross a real broker, so tests, the demo
and benchmarks run against a single-node KRaft Kafka (jars from Maven Central via
scripts/kafka/pom.xml) and Apicurio Registry's Confluent-compatible API (its Quarkus 'all'
assembly via scripts/registry/pom.xml). Both are cached outside the checkout
(`$KIS_STREAM_CACHE`, default `~/.cache/kis-stream`) so fresh clones reuse them, listen on free
127.0.0.1 ports, and are stopped as a whole process group (SIGTERM, then SIGKILL).

Python API: `fetch()`, `start_kafka(workdir)`, `start_registry(workdir)`, and `LocalServices`
(a context manager with `.bootstrap` and `.registry_url`). CLI: `kis-stream services
fetch|up|down|status`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import click

KAFKA_VERSION = "3.9.2"
APICURIO_VERSION = "3.3.3"
KAFKA_MIN_JAVA = 17
# Apicurio Registry 3.3 is compiled for Java 21 (class file 65).
REGISTRY_MIN_JAVA = 21
CCOMPAT_PATH = "/apis/ccompat/v7"
LOOPBACK = "127.0.0.1"
# A system property on every JVM we start, so `down` never signals a stranger's process.
_MARKER = "-Dkis.stream.service="

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


class ServicesError(RuntimeError):
    """A local service could not be fetched, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- cache and fetch


def cache_dir() -> Path:
    """Where fetched distributions live: outside the checkout, shared by every clone."""
    configured = os.environ.get("KIS_STREAM_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kis-stream"


def kafka_home() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def registry_home() -> Path:
    return cache_dir() / f"apicurio-registry-{APICURIO_VERSION}"


@dataclass(frozen=True)
class Fetched:
    """One provisioned distribution and what it took to get it."""

    name: str
    home: Path
    cached: bool
    seconds: float


def _stamp(pom: Path) -> str:
    """Identifies what a cache entry was built from; a changed pom refetches."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _is_complete(home: Path, stamp: str) -> bool:
    marker = home / ".complete"
    return marker.is_file() and marker.read_text().strip() == stamp


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Serialises fetches of concurrent test runs sharing one cache."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mvn(pom: Path, *args: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServicesError(
            "Maven (`mvn`) is not on PATH; it fetches Kafka and the registry from Maven Central. "
            "Install it (e.g. `apt-get install maven`) and retry."
        )
    cmd = [mvn, "-B", "-q", "-f", str(pom), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ServicesError(
            f"Maven could not fetch from Maven Central ({' '.join(cmd)}), exit code "
            f"{result.returncode}:\n{tail}"
        )


def _provision(name: str, home: Path, pom: Path, build: Callable[[Path], None]) -> Fetched:
    """Builds `home` in a scratch folder beside it and renames it into place when complete."""
    started = time.monotonic()
    stamp = _stamp(pom)
    if _is_complete(home, stamp):
        return Fetched(name, home, True, time.monotonic() - started)
    scratch = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        build(scratch)
        (scratch / ".complete").write_text(stamp + "\n")
        shutil.rmtree(home, ignore_errors=True)
        scratch.rename(home)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Fetched(name, home, False, time.monotonic() - started)


def _build_kafka(target: Path) -> None:
    _mvn(
        SCRIPTS / "kafka" / "pom.xml",
        "dependency:copy-dependencies",
        f"-Dkafka.version={KAFKA_VERSION}",
        f"-DoutputDirectory={target / 'lib'}",
    )
    if not list((target / "lib").glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise ServicesError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is missing")


def _build_registry(target: Path) -> None:
    _mvn(
        SCRIPTS / "registry" / "pom.xml",
        "dependency:unpack@apicurio",
        f"-Dapicurio.version={APICURIO_VERSION}",
        f"-Dregistry.dir={target}",
    )
    if not (target / "quarkus-run.jar").is_file():
        raise ServicesError("Maven finished but the Apicurio assembly has no quarkus-run.jar")


def fetch() -> list[Fetched]:
    """Makes sure both distributions are in the cache (Maven Central, via ~/.m2); idempotent."""
    for pom in (SCRIPTS / "kafka" / "pom.xml", SCRIPTS / "registry" / "pom.xml"):
        if not pom.is_file():
            raise ServicesError(f"{pom} is missing: run from a kis-stream checkout")
    with _cache_lock():
        return [
            _provision(
                f"Kafka {KAFKA_VERSION}", kafka_home(), SCRIPTS / "kafka" / "pom.xml", _build_kafka
            ),
            _provision(
                f"Apicurio Registry {APICURIO_VERSION}",
                registry_home(),
                SCRIPTS / "registry" / "pom.xml",
                _build_registry,
            ),
        ]


# --------------------------------------------------------------------------- java


def parse_java_major(version_output: str) -> int | None:
    """The feature release from `java -version` output ("1.8.0_392" -> 8, "17.0.15" -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    return int(match.group(2) or 0) if first == 1 else first


@functools.cache
def java_major(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_major(out.stderr + out.stdout)


JAVA_INSTALL_GLOBS = (
    "/usr/lib/jvm/*/bin/java",
    "/opt/java/*/bin/java",
    "/Library/Java/JavaVirtualMachines/*/Contents/Home/bin/java",
)


def java_candidates() -> list[str]:
    """JAVA_HOME, then PATH, then the usual install folders, without duplicates."""
    found: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(on_path)
    for pattern in JAVA_INSTALL_GLOBS:
        found.extend(sorted(glob.glob(pattern)))
    unique: dict[str, str] = {}
    for path in found:
        if os.access(path, os.X_OK):
            unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def find_java(min_major: int, override_env: str, purpose: str) -> str:
    """A `java` of at least `min_major`; `$override_env` names one explicitly."""
    override = os.environ.get(override_env)
    if override:
        major = java_major(override)
        if major is None or major < min_major:
            raise ServicesError(
                f"{override_env}={override} is Java {major}; {purpose} needs Java {min_major}+"
            )
        return override
    seen = []
    for java in java_candidates():
        major = java_major(java)
        seen.append(f"{java} (Java {major})")
        if major is not None and major >= min_major:
            return java
    raise ServicesError(
        f"{purpose} needs Java {min_major}+ but found "
        f"{', '.join(seen) or 'no java at all'}. Install a JDK {min_major}+ "
        f"(e.g. `apt-get install openjdk-{min_major}-jre-headless`), or point {override_env} "
        "at its bin/java."
    )


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def terminate_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL it after `timeout` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap_group_rest(pid)
                return
            time.sleep(0.05)
    if pid_alive(pid):
        raise ServicesError(f"process {pid} survived SIGKILL")


def _reap_group_rest(pgid: int) -> None:
    """Children that outlived their group leader get killed too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_LIBC: ctypes.CDLL | None = None
_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
    return _LIBC


def die_with_parent_hook(parent: int) -> Callable[[], None]:
    """Runs in the child: SIGTERM it when the spawning thread dies, even by SIGKILL."""
    libc = _libc()

    def hook() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return hook


@dataclass(eq=False)
class ServiceProcess:
    """A JVM we started in its own process group, with its output in `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ServicesError):
                    terminate_group(self.popen.pid, timeout)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=10)
            else:
                _reap_group_rest(self.popen.pid)
        finally:
            _LIVE.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


_LIVE: set[ServiceProcess] = set()
_LIVE_LOCK = threading.Lock()


def stop_all() -> None:
    """Stops every service this interpreter started and still runs (the exit safety net)."""
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        proc.stop(timeout=10)


atexit.register(stop_all)


def _spawn(
    name: str,
    cmd: list[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> ServiceProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    hook = die_with_parent_hook(os.getpid()) if die_with_parent else None
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=hook,  # prctl has to run in the child, between fork and exec
        )
    proc = ServiceProcess(name, popen, log_path)
    if die_with_parent:
        with _LIVE_LOCK:
            _LIVE.add(proc)
    return proc


class _StartFailed(ServicesError):
    def __init__(self, what: str, process: ServiceProcess) -> None:
        self.log = process.log_tail()
        self.bind_conflict = _bind_conflict(self.log)
        super().__init__(
            f"{what} exited during start-up (code {process.popen.poll()}):\n{self.log}"
        )


def _bind_conflict(log: str) -> bool:
    return bool(re.search(r"Address already in use|BindException|seems to be in use", log))


# --------------------------------------------------------------------------- kafka

_KAFKA_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.KafkaConfig=WARN
"""


def kafka_properties(
    data_dir: Path, port: int, controller_port: int, *, auto_create_topics: bool = False
) -> dict[str, str]:
    """server.properties of a single combined broker+controller node on loopback."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        # A small machine shared by many processes: few threads, a small cleaner buffer.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.threads": "1",
    }


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own Uuid.randomUuid, never one starting with "-", which command lines
    would read as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaHandle:
    """A single-node KRaft broker; `bootstrap` is what clients put in bootstrap.servers."""

    workdir: Path
    java: str
    port: int
    controller_port: int
    heap: str = "512m"
    auto_create_topics: bool = False
    die_with_parent: bool = True
    process: ServiceProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    def _cp(self) -> str:
        return str(kafka_home() / "lib" / "*")

    def _jvm(self, heap: str) -> list[str]:
        return [
            self.java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
        ]

    def format_storage(self) -> None:
        """Writes the config and formats a fresh KRaft log dir (wiping an old one)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j.properties").write_text(_KAFKA_LOG4J)
        props = kafka_properties(
            self.data_dir,
            self.port,
            self.controller_port,
            auto_create_topics=self.auto_create_topics,
        )
        _write_properties(self.workdir / "server.properties", props)
        cmd = [
            *self._jvm("256m"),
            "-cp",
            self._cp(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={new_cluster_id()}",
            f"--config={self.workdir / 'server.properties'}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServicesError(
                f"formatting Kafka storage failed ({result.returncode}):\n"
                + (result.stdout + result.stderr)[-3000:]
            )

    def launch(self) -> None:
        """Starts the broker on the already formatted storage (also after `stop`)."""
        if self.process is not None and self.process.alive():
            return
        cmd = [
            *self._jvm(self.heap),
            f"{_MARKER}kafka",
            "-cp",
            self._cp(),
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]
        self.process = _spawn(
            "kafka",
            cmd,
            cwd=self.workdir,
            log_path=self.log_path,
            die_with_parent=self.die_with_parent,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Returns once the broker answers a metadata request; raises with its log if not."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        assert self.process is not None
        deadline = time.monotonic() + timeout
        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise _StartFailed("Kafka", self.process)
            if not port_open(self.port):
                time.sleep(0.2)
                continue
            if admin is None:
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except KafkaException:
                pass
            time.sleep(0.2)
        raise ServicesError(
            f"Kafka did not answer on {self.bootstrap} within {timeout:.0f}s; log:\n"
            + self.process.log_tail()
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


def start_kafka(
    workdir: Path,
    *,
    java: str | None = None,
    heap: str = "512m",
    timeout: float = 90.0,
    auto_create_topics: bool = False,
    die_with_parent: bool = True,
) -> KafkaHandle:
    """Formats and starts a broker on free loopback ports and waits until it answers.

    With `die_with_parent` (the default) the JVM gets SIGTERM when the thread that started it
    ends, so even a SIGKILLed test run leaves no broker behind; `kis-stream services up`
    turns it off to outlive the command.
    """
    fetch()
    java = java or find_java(KAFKA_MIN_JAVA, "KIS_STREAM_JAVA", f"Kafka {KAFKA_VERSION}")
    for attempt in range(3):
        handle = KafkaHandle(
            workdir=Path(workdir).resolve(),
            java=java,
            port=free_port(),
            controller_port=free_port(),
            heap=heap,
            auto_create_topics=auto_create_topics,
            die_with_parent=die_with_parent,
        )
        if handle.port == handle.controller_port:
            continue
        handle.format_storage()
        handle.launch()
        try:
            handle.wait_ready(timeout)
            return handle
        except _StartFailed as failed:
            handle.stop()
            if not failed.bind_conflict or attempt == 2:
                raise
        except BaseException:
            handle.stop()
            raise
    raise ServicesError("could not find free ports for Kafka")


# --------------------------------------------------------------------------- registry


def _http(method: str, url: str, body: object | None = None, timeout: float = 5.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    request.add_header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@dataclass
class RegistryHandle:
    """Apicurio Registry with in-memory storage; `registry_url` is the Confluent-compatible API."""

    workdir: Path
    java: str
    port: int
    management_port: int
    heap: str = "384m"
    die_with_parent: bool = True
    process: ServiceProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def registry_url(self) -> str:
        """The base URL for confluent_kafka's SchemaRegistryClient ({"url": ...})."""
        return self.base_url + CCOMPAT_PATH

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def launch(self) -> None:
        if self.process is not None and self.process.alive():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = {
            "quarkus.http.host": LOOPBACK,
            "quarkus.http.port": str(self.port),
            "quarkus.management.host": LOOPBACK,
            "quarkus.management.port": str(self.management_port),
            "quarkus.http.access-log.enabled": "false",
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": "jdbc:h2:mem:kis_stream_registry",
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
            "apicurio.datasource.jdbc.max-size": "16",
            "apicurio.storage.snapshot.location": str(self.workdir),
            # Tests and the demo delete subjects; Apicurio 3 refuses that by default.
            "apicurio.rest.deletion.group.enabled": "true",
            "apicurio.rest.deletion.artifact.enabled": "true",
            "apicurio.rest.deletion.artifact-version.enabled": "true",
        }
        cmd = [
            self.java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.workdir}",
            f"{_MARKER}registry",
            *(f"-D{k}={v}" for k, v in props.items()),
            "-jar",
            str(registry_home() / "quarkus-run.jar"),
        ]
        self.process = _spawn(
            "registry",
            cmd,
            cwd=self.workdir,
            log_path=self.log_path,
            die_with_parent=self.die_with_parent,
        )

    def wait_ready(self, timeout: float = 120.0, compatibility: str = "BACKWARD") -> None:
        """Waits for the ccompat API, then sets and checks the global compatibility level.

        Apicurio has no compatibility rule until one is set, so without this every schema
        change would be accepted.
        """
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise _StartFailed("Apicurio Registry", self.process)
            try:
                _http("GET", self.registry_url + "/subjects", timeout=2)
                break
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.25)
        else:
            raise ServicesError(
                f"Apicurio Registry did not answer on {self.registry_url} within "
                f"{timeout:.0f}s; log:\n" + self.process.log_tail()
            )
        _http("PUT", self.registry_url + "/config", {"compatibility": compatibility})
        config = _http("GET", self.registry_url + "/config")
        level = config.get("compatibilityLevel") if isinstance(config, dict) else None
        if level != compatibility:
            raise ServicesError(f"registry compatibility is {level!r}, expected {compatibility}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


def _distinct_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def _new_registry(workdir: Path, java: str, heap: str, die_with_parent: bool) -> RegistryHandle:
    port, management_port = _distinct_ports(2)
    return RegistryHandle(
        workdir=Path(workdir).resolve(),
        java=java,
        port=port,
        management_port=management_port,
        heap=heap,
        die_with_parent=die_with_parent,
    )


def _registry_java() -> str:
    return find_java(
        REGISTRY_MIN_JAVA, "KIS_STREAM_REGISTRY_JAVA", f"Apicurio Registry {APICURIO_VERSION}"
    )


def start_registry(
    workdir: Path,
    *,
    java: str | None = None,
    heap: str = "384m",
    timeout: float = 120.0,
    compatibility: str = "BACKWARD",
    die_with_parent: bool = True,
) -> RegistryHandle:
    """Starts Apicurio on free loopback ports, sets global compatibility, waits until ready."""
    fetch()
    java = java or _registry_java()
    for attempt in range(3):
        handle = _new_registry(workdir, java, heap, die_with_parent)
        handle.launch()
        try:
            handle.wait_ready(timeout, compatibility)
            return handle
        except _StartFailed as failed:
            handle.stop()
            if not failed.bind_conflict or attempt == 2:
                raise
        except BaseException:
            handle.stop()
            raise
    raise ServicesError("could not find free ports for the registry")


# --------------------------------------------------------------------------- both


@dataclass
class LocalServices:
    """Kafka and the registry together, for tests, the demo and benchmarks.

    `with LocalServices(workdir) as svc:` starts both (in parallel) and stops both on exit;
    `svc.bootstrap` and `svc.registry_url` are what clients need. Without a workdir a
    temporary one is used and removed on stop. `stop_kafka()` / `start_kafka()` simulate a
    broker outage: the broker comes back on the same port with its data intact.
    """

    workdir: Path | None = None
    kafka_heap: str = "512m"
    registry_heap: str = "384m"
    die_with_parent: bool = True
    kafka: KafkaHandle | None = field(default=None, init=False)
    registry: RegistryHandle | None = field(default=None, init=False)
    _own_workdir: bool = field(default=False, init=False)

    @property
    def bootstrap(self) -> str:
        return self._kafka().bootstrap

    @property
    def registry_url(self) -> str:
        return self._registry().registry_url

    def env(self) -> dict[str, str]:
        """The settings the project's commands read (see .local/services.env)."""
        return {"KAFKA_BOOTSTRAP": self.bootstrap, "SCHEMA_REGISTRY_URL": self.registry_url}

    def _kafka(self) -> KafkaHandle:
        if self.kafka is None:
            raise ServicesError("the local services are not started")
        return self.kafka

    def _registry(self) -> RegistryHandle:
        if self.registry is None:
            raise ServicesError("the local services are not started")
        return self.registry

    def start(self) -> LocalServices:
        fetch()
        kafka_java = find_java(KAFKA_MIN_JAVA, "KIS_STREAM_JAVA", f"Kafka {KAFKA_VERSION}")
        registry_java = _registry_java()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kis-stream-services-"))
            self._own_workdir = True
        workdir = Path(self.workdir).resolve()
        try:
            # The registry boots while Kafka formats and starts: both JVMs start at once.
            self.registry = _new_registry(
                workdir / "registry", registry_java, self.registry_heap, self.die_with_parent
            )
            self.registry.launch()
            self.kafka = start_kafka(
                workdir / "kafka",
                java=kafka_java,
                heap=self.kafka_heap,
                die_with_parent=self.die_with_parent,
            )
            try:
                self.registry.wait_ready()
            except _StartFailed as failed:
                self.registry.stop()
                if not failed.bind_conflict:
                    raise
                self.registry = start_registry(
                    workdir / "registry",
                    java=registry_java,
                    heap=self.registry_heap,
                    die_with_parent=self.die_with_parent,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop_kafka(self, timeout: float = 20.0) -> None:
        """Stops the broker only (a broker outage); `start_kafka` brings it back."""
        self._kafka().stop(timeout)

    def start_kafka(self, timeout: float = 90.0) -> None:
        """Restarts a stopped broker on the same port and data, and waits until it answers."""
        kafka = self._kafka()
        kafka.launch()  # no-op while it still runs
        kafka.wait_ready(timeout)

    def stop(self) -> None:
        """Stops both and, if the workdir was temporary, removes it. Safe to call twice."""
        for service in (self.kafka, self.registry):
            if service is not None:
                service.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- env file


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------- CLI

STATE_DIR = Path(".local")


def _state_paths(state: Path) -> dict[str, Path]:
    return {
        "env": state / "services.env",
        "kafka": state / "kafka.pid",
        "registry": state / "registry.pid",
        "work": state / "services",
    }


def _ours(pid: int, name: str) -> bool:
    """Whether `pid` is still the JVM we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc (macOS): trust the pid file
    return f"{_MARKER}{name}".encode() in cmdline


def _running_pid(pid_file: Path, name: str) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and _ours(pid, name) else None


@click.group()
def services() -> None:
    """The local Kafka broker and schema registry (fetched from Maven Central)."""


@services.command("fetch")
def fetch_command() -> None:
    """Download (once, cached) Kafka and Apicurio Registry with Maven."""
    try:
        results = fetch()
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        how = "cached" if result.cached else "fetched"
        click.echo(f"{result.name}: {how} in {result.seconds:.1f}s at {result.home}")


@services.command("up")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=STATE_DIR,
    show_default=True,
    help="Where services.env, the pid files, logs and data go.",
)
def up_command(state_dir: Path) -> None:
    """Start the broker and registry in the background; addresses go to services.env."""
    paths = _state_paths(state_dir)
    running = {n: _running_pid(paths[n], n) for n in ("kafka", "registry")}
    if all(running.values()) and paths["env"].is_file():
        click.echo(f"already running (pids {running['kafka']}, {running['registry']}):")
        click.echo(paths["env"].read_text().rstrip())
        return
    _down(paths)
    shutil.rmtree(paths["work"], ignore_errors=True)
    svc = LocalServices(paths["work"], die_with_parent=False)
    try:
        svc.start()
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc
    assert svc.kafka is not None and svc.kafka.process is not None
    assert svc.registry is not None and svc.registry.process is not None
    paths["kafka"].write_text(f"{svc.kafka.process.pid}\n")
    paths["registry"].write_text(f"{svc.registry.process.pid}\n")
    write_env_file(paths["env"], svc.env())
    click.echo(f"Kafka {KAFKA_VERSION} and Apicurio Registry {APICURIO_VERSION} are up:")
    click.echo(paths["env"].read_text().rstrip())
    click.echo(f"(logs in {paths['work']}; stop with `make services-down`)")


def _down(paths: Mapping[str, Path]) -> list[str]:
    stopped = []
    for name in ("kafka", "registry"):
        pid = _running_pid(paths[name], name)
        if pid is not None:
            terminate_group(pid)
            stopped.append(f"{name} (pid {pid})")
        paths[name].unlink(missing_ok=True)
    paths["env"].unlink(missing_ok=True)
    return stopped


@services.command("down")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def down_command(state_dir: Path) -> None:
    """Stop what `up` started (no process is left) and remove services.env."""
    stopped = _down(_state_paths(state_dir))
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@services.command("status")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def status_command(state_dir: Path) -> None:
    """Whether the services from `up` run and answer; exit code 1 if not."""
    paths = _state_paths(state_dir)
    env = read_env_file(paths["env"]) if paths["env"].is_file() else {}
    healthy = True
    for name, key in (("kafka", "KAFKA_BOOTSTRAP"), ("registry", "SCHEMA_REGISTRY_URL")):
        pid = _running_pid(paths[name], name)
        address = env.get(key, "?")
        answers = pid is not None and _answers(name, address)
        healthy = healthy and answers
        state = "up" if answers else ("starting or stuck" if pid else "down")
        click.echo(f"{name:9} {state:18} pid={pid or '-':<8} {key}={address}")
    if not healthy:
        sys.exit(1)


def _answers(name: str, address: str) -> bool:
    if name == "kafka":
        host, _, port = address.rpartition(":")
        return port.isdigit() and port_open(int(port), host)
    try:
        _http("GET", address + "/subjects", timeout=2)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
