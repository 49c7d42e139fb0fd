"""End to end: simulator -> producer -> raw topics -> Faust workers -> derived topics.

One simulated session (KRX continuous trading, the closing auction with its empty books, the
close, NXT's break and after-market) runs through the real broker and registry. Three
deployments of `kis-stream process` consume the same raw topics at the same time, each
publishing under its own output prefix:

- `one`: a single worker;
- `two`: two workers of one app sharing the partitions;
- `crash`: a worker SIGKILLed mid-session and started again (state from the changelogs).

Each deployment's four streams must equal an oracle computed independently from the raw
topics (tests/e2e/processors_oracle.py), floats to 1e-9. At-least-once delivery may repeat
a record in `crash` and `two` (rebalances); repeats must be identical copies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.e2e import processors_oracle as oracle

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.slow]

SYMBOLS = "005930,000660"
MAX_AGE_MS = 5_000.0
# 12 simulated minutes (36 wall seconds) of continuous trading before the closing auction:
# under CI load the producer has taken up to ~27 s to stream, and the session must still
# cover trades before the auction.
SIM_START = "15:08:00"
SESSION_S = 77.0  # wall seconds of simulated market at x20: 15:08 -> ~15:33 KST
KILL_AFTER_S = 25.0
DEPLOYMENTS = ("one", "two", "crash")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kis_stream.cli", *args]


@dataclass
class Run:
    prefix: str
    raw: dict[str, list[oracle.Message]] = field(default_factory=dict)
    outputs: dict[str, dict[str, list[oracle.Message]]] = field(default_factory=dict)
    consumed: dict[str, list[int]] = field(default_factory=dict)
    """Per deployment, the bars events each of its workers consumed (from /kis/)."""
    offset_gaps: dict[str, int] = field(default_factory=dict)
    """Per worker, the offset gaps its agents saw (records Faust skipped), from /kis/."""
    spread_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per worker, the spread agent's counters (published, not published by reason)."""


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

    def sleep_until(self, until: float, watch: list[str]) -> None:
        """Sleep until `until` (monotonic), failing as soon as a watched process exits."""
        while (left := until - time.monotonic()) > 0:
            self.check_running(watch)
            time.sleep(min(left, 0.5))
        self.check_running(watch)


def _sim_url(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "KIS_URL=" in line:
                return line.split("KIS_URL=", 1)[1].strip()
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError("the simulator did not print its URL")


def _end_offsets(bootstrap: str, topics: list[str]) -> int:
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


def _lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Per `topic[partition]`, messages the consumer group has not committed yet."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10)
        tps = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in metadata.topics[topic].partitions
        ]
        lag = {}
        for tp in consumer.committed(tps, timeout=10):
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if end > max(tp.offset, 0):
                lag[f"{tp.topic}[{tp.partition}]"] = end - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def _counters(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/kis/", timeout=5) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


@pytest.fixture(scope="module")
def run(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:6]
    prefix = f"e2e{tag}."
    # E2E_PROCESSORS_WORKDIR keeps the logs of the children for debugging a failure.
    work = Path(os.environ.get("E2E_PROCESSORS_WORKDIR") or tmp_path_factory.mktemp("e2e"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work)
    base = dict(os.environ, KAFKA_BOOTSTRAP=services.bootstrap)
    base["SCHEMA_REGISTRY_URL"] = services.registry_url
    try:
        sim_args = ["--port", "0", "--start", SIM_START, "--speed", "20", "--seed", "11"]
        sim = procs.start("sim", _cli("sim", *sim_args, "--symbols", SYMBOLS), base)
        producer_env = dict(
            base,
            KIS_URL=_sim_url(work / "sim.log", sim),
            KIS_SYMBOLS=SYMBOLS,
            KIS_VENUES="KRX,NXT,UN",
            KIS_TR_GROUPS="trades,books,program",
            TOPIC_PREFIX=prefix,
            PRODUCER_SPOOL_DIR=str(work / "spool"),
            METRICS_PORT="0",
            KIS_SUBSCRIBE_INTERVAL_S="0",
        )
        procs.start("producer", _cli("produce", "--env-file", "/dev/null"), producer_env)
        started = time.monotonic()
        ports: dict[str, int] = {}

        def worker(deployment: str, name: str) -> None:
            ports.setdefault(name, _free_port())
            env = dict(
                base,
                TOPIC_PREFIX=prefix,
                PROCESSORS_OUTPUT_PREFIX=f"{prefix}{deployment}.",
                PROCESSORS_APP_ID=f"e2e-{deployment}-{tag}",
                PROCESSORS_WEB_PORT=str(ports[name]),
                PROCESSORS_DATA_DIR=str(work / name),
                PROCESSORS_BAR_GRACE="0.5",
                PROCESSORS_SPREAD_MAX_AGE_MS=str(MAX_AGE_MS),
                PROCESSORS_TOPIC_WAIT="60",
                PROCESSORS_SESSION_TIMEOUT="10",
            )
            procs.start(name, _cli("process"), env)

        for deployment, name in (("one", "one"), ("two", "two-a")):
            worker(deployment, name)
        worker("crash", "crash")
        # The second worker joins while the first is busy with the backlog of the first
        # seconds (a rebalance with records in flight: issue 6's input loss).
        delay = float(os.environ.get("E2E_SECOND_WORKER_DELAY", "3"))
        procs.sleep_until(time.monotonic() + delay, ["one", "two-a", "crash"])
        worker("two", "two-b")
        # A worker that dies fails the run at once, with its exit code and log.
        workers = ["one", "two-a", "two-b", "crash"]

        procs.sleep_until(started + KILL_AFTER_S, workers)
        procs.kill("crash")  # SIGKILL: no commit, no flush
        procs.sleep_until(time.monotonic() + 2, ["one", "two-a", "two-b"])
        worker("crash", "crash")

        procs.sleep_until(started + SESSION_S, workers)
        procs.stop("producer")
        procs.stop("sim")
        result = Run(prefix)
        raw_topics = [f"{prefix}{tr.lower()}" for tr in RAW_TRS]
        outputs = {
            d: [f"{prefix}{d}.{name}" for name in ("bars.1s", "book.imbalance")]
            + [f"{prefix}{d}.{name}" for name in ("program.netbuy", "spread.krx_nxt")]
            for d in DEPLOYMENTS
        }
        # Wait until every deployment has committed all its input, then until the outputs
        # stop growing (the grace timer publishes the last bars).
        deadline = time.monotonic() + 180
        for deployment in DEPLOYMENTS:
            inputs = [*raw_topics, f"e2e-{deployment}-{tag}-program-by-venue"]
            while lag := _lag(services.bootstrap, f"e2e-{deployment}-{tag}", inputs):
                procs.check_running(workers)
                assert time.monotonic() < deadline, f"{deployment} did not catch up: {lag}"
                time.sleep(1)
        previous, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            procs.check_running(workers)
            total = _end_offsets(services.bootstrap, [t for ts in outputs.values() for t in ts])
            if total != previous:
                previous, stable_since = total, time.monotonic()
            elif time.monotonic() - stable_since > 5:
                break
            time.sleep(1)
        procs.check_running(workers)
        for deployment, names in (("one", ["one"]), ("two", ["two-a", "two-b"])):
            result.consumed[deployment] = [
                _counters(ports[n])["counters"]["bars"].get("consumed", 0) for n in names
            ]
        for name in ("one", "two-a", "two-b", "crash"):
            counters = _counters(ports[name])
            result.offset_gaps[name] = counters["offset_gaps"]
            result.spread_counters[name] = counters["counters"]["spread"]
        for name in workers:
            procs.stop(name)
        for topic in raw_topics:
            result.raw[topic.removeprefix(prefix)] = oracle.read_topic(
                services.bootstrap, services.registry_url, topic
            )
        for deployment, topics in outputs.items():
            result.outputs[deployment] = {
                t.removeprefix(f"{prefix}{deployment}."): oracle.read_topic(
                    services.bootstrap, services.registry_url, t
                )
                for t in topics
            }
        if os.environ.get("E2E_PROCESSORS_DUMP"):  # for debugging a failure offline
            import pickle

            Path(os.environ["E2E_PROCESSORS_DUMP"]).write_bytes(pickle.dumps(result))
        yield result
    finally:
        procs.stop_all()


RAW_TRS = (
    "H0STCNT0",
    "H0NXCNT0",
    "H0UNCNT0",
    "H0STASP0",
    "H0NXASP0",
    "H0UNASP0",
    "H0STPGM0",
    "H0NXPGM0",
    "H0UNPGM0",
)


def _values(messages: list[oracle.Message]) -> list[dict[str, Any]]:
    return [m.value for m in messages]


def test_the_session_covers_trading_the_auction_and_the_close(run: Run) -> None:
    raw = run.raw
    trades = raw["h0stcnt0"] + raw["h0nxcnt0"] + raw["h0uncnt0"]
    assert {m.value["venue"] for m in trades} == {"KRX", "NXT", "UN"}
    assert len(raw["h0stasp0"]) > 100 and len(raw["h0nxasp0"]) > 100
    assert raw["h0nxpgm0"] or raw["h0stpgm0"]
    # KRX trades before the closing auction (15:20) and at its uncross (15:30).
    clocks = [m.value["stck_cntg_hour"] // 1000 for m in raw["h0stcnt0"]]
    assert min(clocks) < 15 * 3600 + 20 * 60 <= 15 * 3600 + 30 * 60 <= max(clocks)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_bars_equal_the_oracle(run: Run, deployment: str) -> None:
    raw = run.raw
    expected = oracle.oracle_bars(raw["h0stcnt0"] + raw["h0nxcnt0"] + raw["h0uncnt0"])
    published = run.outputs[deployment]["bars.1s"]
    assert len(expected) > 50
    final = oracle.final_bars(published)
    oracle.compare(final.values(), expected.values(), duplicates_ok=False)
    assert {m.key for m in published} == {f"{s}|{v}" for s, v, _ in expected}
    # Each (symbol, venue, second) was published once, then only revised or repeated.
    by_window: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for m in published:
        by_window[(m.value["symbol"], m.value["venue"], m.value["window_start"])].append(m.value)
    for key, versions in by_window.items():
        if deployment == "one":
            assert [v["revision"] for v in versions] == list(range(len(versions))), key


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_imbalance_equals_the_oracle(run: Run, deployment: str) -> None:
    raw = run.raw
    expected = oracle.oracle_imbalance(raw["h0stasp0"] + raw["h0nxasp0"] + raw["h0unasp0"])
    published = run.outputs[deployment]["book.imbalance"]
    assert len(expected) > 300
    oracle.compare(_values(published), expected, duplicates_ok=deployment != "one")
    if deployment == "one":  # per key, published in the order of the raw records
        order: dict[str, list[int]] = defaultdict(list)
        for m in published:
            order[m.key].append(m.value["received_at"])
        assert all(seq == sorted(seq) for seq in order.values())


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_program_equals_the_oracle(run: Run, deployment: str) -> None:
    raw = run.raw
    expected, totals = oracle.oracle_program(raw["h0stpgm0"] + raw["h0nxpgm0"] + raw["h0unpgm0"])
    published = run.outputs[deployment]["program.netbuy"]
    symbols: dict[str, list[dict[str, Any]]] = defaultdict(list)
    markets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in published:
        (symbols if m.value["scope"] == "symbol" else markets)[m.key].append(m.value)
    assert sum(len(r) for r in expected.values()) > 20
    assert {k: oracle.distinct_in_order(v) for k, v in symbols.items()} == expected
    # Venue totals: the last one is the sum of every symbol's final cumulative value ...
    for venue, (day, qty, amount, n) in totals.items():
        last = markets[f"*|{venue}"][-1]
        assert (
            last["business_date"],
            last["market_net_qty"],
            last["market_net_amount"],
            last["market_symbols"],
        ) == (day, qty, amount, n)
    # ... and each one is the sum of the latest values of the updates before it.
    if deployment == "one":
        for venue_records in markets.values():
            latest: dict[str, tuple[int, int]] = {}
            for record in venue_records:
                if record["symbol"] is not None:
                    latest[record["symbol"]] = (record["net_qty"], record["net_amount"])
                assert record["market_net_qty"] == sum(q for q, _ in latest.values())
                assert record["market_net_amount"] == sum(a for _, a in latest.values())


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_spread_equals_the_oracle(run: Run, deployment: str) -> None:
    raw = run.raw
    expected = oracle.oracle_spread(raw["h0stasp0"], raw["h0nxasp0"], MAX_AGE_MS)
    published = run.outputs[deployment]["spread.krx_nxt"]
    print({name: c for name, c in run.spread_counters.items() if name.startswith(deployment)})
    assert len(expected) > 100
    assert {r["trigger_venue"] for r in expected} == {"KRX", "NXT"}
    oracle.compare(_values(published), expected, duplicates_ok=deployment != "one")


def test_two_workers_both_did_work(run: Run) -> None:
    assert all(n > 0 for n in run.consumed["two"]), run.consumed


def test_no_worker_saw_records_skipped(run: Run) -> None:
    assert run.offset_gaps == dict.fromkeys(run.offset_gaps, 0)
