"""`kis-stream bench process`: events/s per worker and input-to-output latency, per stream.

For each stream a fresh topic prefix is used on a real broker and registry (started locally
unless KAFKA_BOOTSTRAP and SCHEMA_REGISTRY_URL are given), raw Avro records (Confluent wire
format, the producer's encoder) are written straight into the raw topics, and one
`kis-stream process --streams <stream>` worker (its own process, as deployed) consumes them:

- throughput: a backlog of N events is produced first; events/s = N / (time between the
  first and the last derived record, broker timestamps), i.e. start-up excluded; and, since
  the machine may be shared, events per CPU-second of the worker process (all its threads,
  from /proc) over the same span;
- latency: with the worker caught up, events are produced at fixed rates (500 and 2,000/s
  by default, lowest first); latency is from handing the raw record to the Kafka client to
  a consumer receiving the derived record. For bars it is the delay of each bar after the
  end of its (wall-clock-aligned) second. Above the worker's throughput a backlog builds up
  and the latency grows with the run's length. The part up to the output's append to its
  topic is shown too (the bench creates the output topics with broker-set timestamps,
  LogAppendTime): the output is in Kafka then, and the rest is the bench consumer's fetch.

The bench stands in for the producer, so it publishes receive marks as the producer does
(producer/marks.py: records stamped, held until acknowledged, marks from the thread that
serves the delivery callbacks): the spread's latency is that of the deployed design.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema

from kis_stream import topics
from kis_stream.settings import Settings
from processors.codec import AvroDecoder, registry_client
from processors.inputs import DAY_MS, KST_OFFSET_MS
from processors.topology import INPUT_TRS, Topology
from producer.avro import ConfluentEncoder, confluent_header, load_raw_schema
from producer.catalogue import load_catalogue
from producer.marks import MarkPublisher, ReceiveMarks, mark_schema_text

SYMBOLS = tuple(f"{i:06d}" for i in range(5930, 5930 + 20))
PARTITIONS = 3

Raw = tuple[str, bytes, bytes]  # topic, key, value


class BenchClock:
    """Strictly increasing receive times: synthetic ones for the backlog (`source`), then the
    wall clock (every latency sample is looked up by its receive time)."""

    def __init__(self, source: Callable[[], int]) -> None:
        self.source = source
        self.last = 0

    def __call__(self) -> int:
        self.last = max(self.last + 1, self.source())
        return self.last


def wall_us() -> int:
    return int(time.time() * 1_000_000)


class MarkedProducer:
    """The bench's raw-record writer, acting as the producer: receive marks included."""

    def __init__(self, bootstrap: str, marks_topic: str, header: bytes, clock: BenchClock) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "queue.buffering.max.messages": 2_000_000,
                "socket.nagle.disable": True,  # as the producer's (producer/sink.py)
            }
        )
        self.clock = clock
        self.marks = ReceiveMarks(clock=clock)
        send = partial(self._send_mark, marks_topic)
        default = Settings.model_fields["producer_marks_interval_ms"].default  # the producer's
        interval_s = float(os.environ.get("PRODUCER_MARKS_INTERVAL_MS", default)) / 1000
        self.publisher = MarkPublisher(self.marks, send, header=header, interval_s=interval_s)

    def _send_mark(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.produce(topic, value, key)

    def stamp(self) -> int:
        return self.marks.stamp()

    def produce(self, raw: Raw, received_at: int) -> None:
        """Produce a record stamped by `stamp` (its receive time); the stamp is released."""
        topic, key, value = raw
        self.marks.hold(received_at)
        callback = partial(self._delivered, received_at)
        self.producer.produce(topic, value, key, on_delivery=callback)
        self.marks.settle(received_at)

    def _delivered(self, received_at: int, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            at = msg.offset()
            self.marks.acked(
                received_at, True, msg.topic() or "", msg.partition() or 0, -1 if at is None else at
            )
        elif not err.retriable():
            self.marks.settle(received_at)

    def pump(self) -> None:
        """Delivery callbacks, then a mark if one is due (the same thread: consistent)."""
        self.producer.poll(0)
        self.publisher.maybe_publish()

    def flush(self, timeout: float) -> None:
        self.producer.flush(timeout)
        self.publisher.maybe_publish()


class RawWriter:
    """Encodes synthetic raw records with the registered raw schemas of a topic prefix."""

    def __init__(self, registry_url: str, topology: Topology) -> None:
        self.registry = registry_client(registry_url)
        self.topology = topology
        self.catalogue = load_catalogue()
        self._encoders: dict[str, ConfluentEncoder] = {}
        self._templates: dict[str, dict[str, Any]] = {}

    def encoder(self, tr_id: str) -> ConfluentEncoder:
        encoder = self._encoders.get(tr_id)
        if encoder is None:
            schema = load_raw_schema(tr_id)
            subject = topics.subject(self.topology.raw(tr_id))
            schema_id = self.registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
            encoder = self._encoders[tr_id] = ConfluentEncoder(schema, schema_id)
            spec = self.catalogue[tr_id]
            template: dict[str, Any] = {f.column: None for f in spec.fields}
            template.update(
                tr_id=tr_id, venue=spec.venue, session="bench", seq=0, index=0, extra_fields=None
            )
            self._templates[tr_id] = template
        return encoder

    def raw(self, tr_id: str, symbol: str, fields: dict[str, Any]) -> Raw:
        encoder = self.encoder(tr_id)
        datum = dict(self._templates[tr_id])
        datum.update(symbol=symbol, event_time=None, received_at=0)
        datum.update(fields)
        return self.topology.raw(tr_id), symbol.encode(), encoder.encode(datum)


_QUANTITIES = range(1, 501)
_ASKP, _BIDP = ([f"{side}{i}" for i in range(11)] for side in ("askp", "bidp"))
_ASKQ, _BIDQ = ([f"{side}_rsqn{i}" for i in range(11)] for side in ("askp", "bidp"))


class Market:
    """A random walk per symbol: books, trades and program counters around it."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.price = dict.fromkeys(SYMBOLS, 70_000)
        self.program = {s: [0, 0, 0, 0] for s in SYMBOLS}

    def step(self, symbol: str) -> int:
        self.price[symbol] += self.rng.choice((-100, 0, 0, 100))
        return self.price[symbol]

    def book(self, symbol: str, received_at: int, event_time: int) -> dict[str, Any]:
        # Quantities in two calls to the generator, not 20 (27 -> 10 µs per book): the bench
        # shares the cores of the worker it measures.
        mid = self.step(symbol)
        asks = self.rng.choices(_QUANTITIES, k=10)
        bids = self.rng.choices(_QUANTITIES, k=10)
        fields: dict[str, Any] = {"received_at": received_at, "event_time": event_time}
        for i in range(1, 11):
            fields[_ASKP[i]] = mid + 100 * i
            fields[_BIDP[i]] = mid - 100 * (i - 1)
            fields[_ASKQ[i]] = asks[i - 1]
            fields[_BIDQ[i]] = bids[i - 1]
        fields["total_askp_rsqn"] = sum(asks)
        fields["total_bidp_rsqn"] = sum(bids)
        return fields

    def trade(self, symbol: str, received_at: int, instant_ms: int) -> dict[str, Any]:
        local = instant_ms + KST_OFFSET_MS
        side = self.rng.choice(("1", "5"))
        return {
            "received_at": received_at,
            "event_time": instant_ms - instant_ms % 1000,
            "bsop_date": local // DAY_MS,
            "stck_cntg_hour": local % DAY_MS - local % 1000,
            "stck_prpr": self.step(symbol),
            "cntg_vol": self.rng.randint(1, 100),
            "cntg_cls_code": side,
            "ccld_dvsn": side,
        }

    def program_update(self, symbol: str, received_at: int, event_time: int) -> dict[str, Any]:
        counters = self.program[symbol]
        counters[0] += self.rng.randint(0, 100)
        counters[1] += self.rng.randint(0, 100)
        counters[2] = counters[0] * 70_000
        counters[3] = counters[1] * 70_000
        return {
            "received_at": received_at,
            "event_time": event_time,
            "shnu_cnqn": counters[0],
            "seln_cnqn": counters[1],
            "shnu_tr_pbmn": counters[2],
            "seln_tr_pbmn": counters[3],
            "ntby_cnqn": counters[0] - counters[1],
            "ntby_tr_pbmn": counters[2] - counters[3],
        }


def events(
    stream: str, writer: RawWriter, market: Market, n: int, clock: Callable[[], int]
) -> Iterator[Raw]:
    """N raw records for a stream, round-robin over symbols and the stream's TRs.

    `clock()` gives epoch microseconds: the records' receive time (and event time).
    """
    trs = INPUT_TRS[stream]
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        tr_id = trs[(i // len(SYMBOLS)) % len(trs)]
        now_us = clock()
        if stream in ("imbalance", "spread"):
            fields = market.book(symbol, now_us, now_us // 1000)
        elif stream == "bars":
            fields = market.trade(symbol, now_us, now_us // 1000)
        else:
            fields = market.program_update(symbol, now_us, now_us // 1000)
        yield writer.raw(tr_id, symbol, fields)


@contextlib.contextmanager
def _services(bootstrap: str | None, registry: str | None) -> Iterator[tuple[str, str]]:
    if bootstrap and registry:
        yield bootstrap, registry
        return
    from kis_stream.services import LocalServices

    with LocalServices(Path(".local/bench-services")) as services:
        yield services.bootstrap, services.registry_url


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all threads) so far; None if unknown (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@contextlib.contextmanager
def _worker(
    stream: str, topology: Topology, bootstrap: str, registry: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP=bootstrap,
        SCHEMA_REGISTRY_URL=registry,
        TOPIC_PREFIX=topology.prefix,
        PROCESSORS_APP_ID=topology.app_id,
        PROCESSORS_STREAMS=stream,
        PROCESSORS_STANDBY_REPLICAS="0",
        PROCESSORS_LOG_LEVEL="warning",
    )
    with tempfile.TemporaryDirectory() as data_dir:
        env["PROCESSORS_DATA_DIR"] = data_dir
        log = open(Path(data_dir) / "worker.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kis_stream.cli", "process", "--without-web"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)

    def pick(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)

    return {
        "p50": pick(0.5),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": pick(1.0),
        "samples": len(ordered),
    }


def run_stream(
    stream: str, bootstrap: str, registry: str, n: int, rates: tuple[float, ...], seconds: float
) -> dict[str, Any]:
    """Throughput over a backlog of `n` events, then latency at each of `rates` events/s."""
    tag = uuid.uuid4().hex[:6]
    topology = Topology(f"bench{tag}.", f"bench-{stream}-{tag}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    marks_topic = topics.marks_topic(topology.prefix)
    appended_at = {"message.timestamp.type": "LogAppendTime"}  # when the output is in Kafka
    for future in admin.create_topics(
        [NewTopic(name, PARTITIONS, 1) for name in topology.inputs(stream)]
        + [NewTopic(name, PARTITIONS, 1, config=appended_at) for name in topology.outputs(stream)]
        + [NewTopic(marks_topic, 1, 1)]
    ).values():
        future.result(30)
    writer, market = RawWriter(registry, topology), Market()
    marks_id = writer.registry.register_schema(
        topics.subject(marks_topic), Schema(mark_schema_text(), "AVRO")
    )
    # Throughput: the backlog is in the topics before the worker starts, 1 ms of event time
    # per event, an hour ago; the latency runs then stamp on the wall clock.
    t0_us = (int(time.time()) - 3_600) * 1_000_000
    clock = BenchClock(partial(next, itertools.count(t0_us, 1_000)))
    writer_producer = MarkedProducer(bootstrap, marks_topic, confluent_header(marks_id), clock)
    for raw in events(stream, writer, market, n, writer_producer.stamp):
        writer_producer.produce(raw, clock.last)
        writer_producer.pump()
    if stream == "bars":  # one later tick per symbol closes every open bar by event time
        late_us = t0_us + n * 1_000 + 5_000_000
        for symbol in SYMBOLS:
            for tr_id in INPUT_TRS["bars"]:
                at = writer_producer.stamp()
                fields = market.trade(symbol, late_us, late_us // 1000)
                writer_producer.produce(writer.raw(tr_id, symbol, fields), at)
    writer_producer.flush(60)
    clock.source = wall_us
    outputs = topology.outputs(stream)[:1]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{tag}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(outputs))
    decoder = AvroDecoder(registry_client(registry))
    load_before = load_average()
    with _worker(stream, topology, bootstrap, registry) as proc:
        first = last = None
        cpu_first = cpu_last = None
        count, idle_since = 0, time.monotonic()
        # Generous: on a loaded machine a worker may manage only a few hundred events/s.
        deadline = time.monotonic() + 120 + n / 100
        while time.monotonic() < deadline:
            writer_producer.pump()  # heartbeat marks: the worker starts reading them late
            # In batches: a poll and a read of /proc per message took CPU from the worker.
            stamps = [m.timestamp()[1] for m in consumer.consume(10_000, 0.2) if not m.error()]
            if not stamps:
                if count and time.monotonic() - idle_since > 10:
                    break
                continue
            idle_since = time.monotonic()
            if cpu_first is None:
                cpu_first = cpu_seconds(proc.pid)
            cpu_last = cpu_seconds(proc.pid)
            low, high = min(stamps), max(stamps)
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
            count += len(stamps)
        if not count or first is None or last is None:
            raise click.ClickException(f"{stream}: the worker produced no output")
        # (None: the outputs were appended within one millisecond, the broker's resolution;
        # a backlog too small to measure.)
        throughput = n / ((last - first) / 1000) if last > first else None
        cpu = cpu_last - cpu_first if cpu_first is not None and cpu_last is not None else None
        latency = {}
        appended = {}
        for rate in rates:  # lowest first: a backlog left by an overload would skew the next
            values, in_kafka = _latency(
                stream, writer, market, writer_producer, consumer, decoder, rate, seconds
            )
            latency[f"{rate:g}"] = _percentiles(values)
            if in_kafka:
                appended[f"{rate:g}"] = _percentiles(in_kafka)
    consumer.close()
    return {
        "stream": stream,
        "backlog_events": n,
        "outputs_seen": count,
        "events_per_s": round(throughput) if throughput is not None else None,
        "worker_cpu_s": cpu,
        "events_per_cpu_s": round(n / cpu) if cpu else None,
        "load_average_1m": [load_before, load_average()],
        "latency_ms_by_rate": latency,
        "to_output_in_kafka_ms_by_rate": appended,
    }


def _latency(
    stream: str,
    writer: RawWriter,
    market: Market,
    producer: MarkedProducer,
    consumer: Consumer,
    decoder: AvroDecoder,
    rate: float,
    seconds: float,
) -> tuple[list[float], list[float]]:
    """Produce at `rate` for `seconds`; per derived record, ms from input to its arrival, and
    the part of it from input to the output's append to its topic (the record's Kafka
    timestamp, set by the broker: ms resolution)."""
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    in_kafka: list[float] = []

    def observe(timeout: float) -> None:
        # Everything that has arrived (one poll per message could not keep up with 2,000
        # outputs/s between sends, and the bench's own backlog then showed as latency).
        for message in consumer.consume(10_000, timeout):
            if message.error():
                continue
            arrived = time.time()
            value = decoder.decode(message.value())
            if stream == "bars":
                if value["window_start"] >= run_start_ms:  # not a bar of the backlog
                    latencies.append((arrived - value["window_end"] / 1000) * 1000)
                continue
            if stream == "spread":
                received = value[f"{value['trigger_venue'].lower()}_received_at"]
            else:
                received = value["received_at"]
            sent = sent_at.get(received) if received is not None else None
            if sent is not None:
                latencies.append((arrived - sent) * 1000)
                in_kafka.append(message.timestamp()[1] - sent * 1000)

    run_start_ms = int(time.time() * 1000)
    start = time.monotonic()
    interval = 1 / rate
    generated = events(stream, writer, market, int(rate * seconds), producer.stamp)
    for i, raw in enumerate(generated):
        received_at = producer.clock.last
        due = start + i * interval
        while time.monotonic() < due:
            observe(0)
            producer.pump()
            time.sleep(min(0.0005, max(0.0, due - time.monotonic())))
        sent_at[received_at] = time.time()
        producer.produce(raw, received_at)
        producer.pump()
    producer.flush(30)
    drain_until = time.monotonic() + 5
    while time.monotonic() < drain_until:
        observe(0.1)
        producer.pump()
    return latencies, in_kafka


@click.command("process")
@click.option(
    "--streams", default="imbalance,spread,bars,program", show_default=True, help="Which streams."
)
@click.option("--events", "n", default=100_000, show_default=True, help="Backlog per stream.")
@click.option(
    "--rate",
    "rates",
    multiple=True,
    type=float,
    default=(500.0, 2_000.0),
    show_default=True,
    help="Events/s of a latency run (repeatable).",
)
@click.option("--seconds", default=10.0, show_default=True, help="Length of the latency run.")
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP", help="Broker (default: start a local one).")
@click.option("--registry", envvar="SCHEMA_REGISTRY_URL", help="Registry URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def bench_process(
    streams: str,
    n: int,
    rates: tuple[float, ...],
    seconds: float,
    bootstrap: str | None,
    registry: str | None,
    as_json: bool,
) -> None:
    """Throughput (events/s per worker) and latency of each Faust stream."""
    results = []
    with _services(bootstrap, registry) as (broker, registry_url):
        for stream in [s.strip() for s in streams.split(",") if s.strip()]:
            result = run_stream(stream, broker, registry_url, n, tuple(sorted(rates)), seconds)
            results.append(result)
            if not as_json:
                per_cpu, per_s = result["events_per_cpu_s"], result["events_per_s"]
                click.echo(
                    f"{stream:10s} {'-' if per_s is None else f'{per_s:,}':>8} events/s  "
                    f"{'-' if per_cpu is None else f'{per_cpu:,}'} events per CPU-second  "
                    f"({result['outputs_seen']:,} outputs; "
                    f"load average {result['load_average_1m']})"
                )
                for rate, lat in result["latency_ms_by_rate"].items():
                    click.echo(
                        f"{'':10s} latency at {float(rate):,.0f}/s: p50 {lat['p50']} ms  "
                        f"p95 {lat['p95']} ms  p99 {lat['p99']} ms  max {lat['max']} ms  "
                        f"(n={lat['samples']})"
                    )
                    part = result["to_output_in_kafka_ms_by_rate"].get(rate)
                    if part:
                        click.echo(
                            f"{'':10s}   of which to the output's append to its topic: "
                            f"p50 {part['p50']} ms  p95 {part['p95']} ms  p99 {part['p99']} ms"
                        )
    if as_json:
        click.echo(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
