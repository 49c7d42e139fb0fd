"""Which topics each stream reads and writes, and the start-up checks on them.

Faust tables write their changelog to the partition of the event being processed, so every
topic a stream reads must have the same partition count (co-partitioned by symbol). That is
checked before the worker starts; a mismatch stops it with a message naming the topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from kis_stream import topics

log = logging.getLogger(__name__)

TRADES = ("H0STCNT0", "H0NXCNT0", "H0UNCNT0")
BOOKS = ("H0STASP0", "H0NXASP0", "H0UNASP0")
PROGRAM = ("H0STPGM0", "H0NXPGM0", "H0UNPGM0")
SPREAD_BOOKS = ("H0STASP0", "H0NXASP0")

INPUT_TRS: dict[str, tuple[str, ...]] = {
    "bars": TRADES,
    "imbalance": BOOKS,
    "program": PROGRAM,
    "spread": SPREAD_BOOKS,
}

# Output topics by role (names of the default `kis.` prefix; see Topology.derived).
BARS_OUT, BARS_LATE_OUT = topics.BARS_1S, topics.BARS_1S + ".late"
OUTPUT_ROLES: dict[str, tuple[str, ...]] = {
    "bars": (BARS_OUT, BARS_LATE_OUT),
    "imbalance": (topics.BOOK_IMBALANCE,),
    "program": (topics.PROGRAM_NETBUY,),
    "spread": (topics.SPREAD_KRX_NXT,),
}


@dataclass(frozen=True, slots=True)
class Topology:
    """Topic names for a topic prefix (the producer's TOPIC_PREFIX) and a Faust app id.

    With the default prefix `kis.` the names are the contract's (`kis.h0stcnt0`,
    `kis.bars.1s`, ...); another prefix renames raw and derived topics alike, so separate
    deployments, tests and benchmarks can share a broker.
    """

    prefix: str = "kis."
    app_id: str = "kis-stream-processors"
    output_prefix: str | None = None
    """Prefix of the derived topics when it differs from the raw topics' (blue/green runs)."""

    def raw(self, tr_id: str) -> str:
        return topics.raw_topic(tr_id, self.prefix)

    def derived(self, name: str) -> str:
        """A derived topic's name under the output prefix (`kis.bars.1s` -> `<p>bars.1s`)."""
        prefix = self.output_prefix if self.output_prefix is not None else self.prefix
        return prefix + name.removeprefix("kis.")

    def inputs(self, stream: str) -> tuple[str, ...]:
        return tuple(self.raw(tr_id) for tr_id in INPUT_TRS[stream])

    def outputs(self, stream: str) -> tuple[str, ...]:
        return tuple(self.derived(name) for name in OUTPUT_ROLES[stream])

    def changelogs(self, stream: str) -> tuple[str, ...]:
        """Faust's changelog topics of the stream's tables (`<app id>-<table>-changelog`)."""
        tables = {
            "bars": ("bars",),
            "program": ("program_symbols", "program_market"),
            "spread": ("spread_books",),
        }.get(stream, ())
        return tuple(f"{self.app_id}-{table}-changelog" for table in tables)

    def helpers(self, stream: str) -> tuple[str, ...]:
        """Helper topics the processors own (prefixed by the app id, like Faust's changelogs)."""
        return {
            "bars": (f"{self.app_id}-bars-clock",),
            "program": (f"{self.app_id}-program-by-venue",),
        }.get(stream, ())


class TopologyError(RuntimeError):
    """The topics on the broker do not allow the streams to run correctly."""


def client_config(kafka: str | Mapping[str, str]) -> dict[str, str | int | float | bool]:
    """librdkafka properties from a bootstrap address or a full config (with SASL/SSL)."""
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def admin_client(kafka: str | Mapping[str, str]) -> AdminClient:
    """An admin client: `kafka` is a bootstrap address or the settings' client config."""
    return AdminClient(client_config(kafka))


def partition_counts(admin: AdminClient, names: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic that exists (missing topics are left out)."""
    metadata = admin.list_topics(timeout=10)
    counts = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            counts[name] = len(topic.partitions)
    return counts


def wait_for_topics(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, int]:
    """Wait until every topic exists; its partition count, or TopologyError after `timeout`."""
    wanted = sorted(set(names))
    deadline = time.monotonic() + timeout
    next_log = 0.0
    while True:
        counts = partition_counts(admin, wanted)
        missing = [name for name in wanted if name not in counts]
        if not missing:
            return counts
        now = time.monotonic()
        if now >= deadline:
            raise TopologyError(
                f"input topics missing after {timeout:.0f}s: {', '.join(missing)}. Start the "
                "producer with these TRs subscribed, or choose other streams "
                "(PROCESSORS_STREAMS / --streams)."
            )
        if now >= next_log:
            log.info("waiting for input topics: %s", ", ".join(missing))
            next_log = now + 5
        time.sleep(0.5)


def stream_partitions(
    stream: str, counts: Mapping[str, int], topology: Topology | None = None
) -> int:
    """The one partition count of a stream's inputs; TopologyError if they differ."""
    topology = topology or Topology()
    per_topic = {name: counts[name] for name in topology.inputs(stream)}
    if len(set(per_topic.values())) != 1:
        listing = ", ".join(f"{name}={n}" for name, n in sorted(per_topic.items()))
        if stream == "spread":
            krx, nxt = topology.inputs("spread")
            raise TopologyError(
                f"{krx} (KRX books) and {nxt} (NXT books) must have the same partition count "
                f"so that a symbol's two books meet in one worker: {listing}. Recreate one of "
                "them (or add partitions) so that the counts match."
            )
        raise TopologyError(
            f"the {stream} stream reads topics with different partition counts ({listing}); "
            "its state is partitioned like its inputs, so they must all be equal."
        )
    return next(iter(per_topic.values()))


def plan(
    admin: AdminClient, topology: Topology, streams: Iterable[str], timeout: float
) -> dict[str, int]:
    """Wait for the inputs of `streams` and return each stream's partition count."""
    streams = list(streams)
    counts = wait_for_topics(admin, [t for s in streams for t in topology.inputs(s)], timeout)
    return {stream: stream_partitions(stream, counts, topology) for stream in streams}


def commit_start_offsets(
    kafka: str | Mapping[str, str], group: str, names: Iterable[str], timeout: float = 30.0
) -> int:
    """Give every partition without a committed offset one: its first available offset.

    Why: faust-streaming resumes fetching newly assigned partitions before it seeks them to
    their committed offsets, and drops what it fetched in between; for a partition without a
    committed offset it then does not seek back, so records written to it during a rebalance
    (a new worker joining, a SIGKILLed one leaving) were lost. With an offset committed for
    every input partition up front, the seek always happens. Only possible while the group
    has no active member (the first worker to start). Best effort: returns how many offsets
    were committed, 0 if it could not (logged), and never raises.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    _COORDINATOR_BUSY = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
    names = list(names)
    deadline = time.monotonic() + timeout
    while True:
        consumer = Consumer(
            {**client_config(kafka), "group.id": group, "enable.auto.commit": False}
        )
        try:
            metadata = consumer.list_topics(timeout=10)
            tps = [
                TopicPartition(name, partition)
                for name in names
                if name in metadata.topics
                for partition in metadata.topics[name].partitions
            ]
            missing = [tp for tp in consumer.committed(tps, timeout=10) if tp.offset < 0]
            for tp in missing:
                tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[0]
            if missing:
                consumer.commit(offsets=missing, asynchronous=False)
            return len(missing)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _COORDINATOR_BUSY or time.monotonic() > deadline:
                # e.g. the group already has members (they commit), or no broker
                log.info("start offsets not committed for group %s: %s", group, exc)
                return 0
            time.sleep(1)  # the coordinator is loading or moving
        finally:
            consumer.close()


def ensure_topics(
    admin: AdminClient,
    wanted: Mapping[str, int],
    replication: int,
    config: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create missing topics with the given partition counts (existing ones are kept)."""
    existing = partition_counts(admin, wanted)
    config = config or {}
    new = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=replication,
            config=dict(config.get(name, {})),
        )
        for name, n in wanted.items()
        if name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new).items():
        try:
            future.result()
        except Exception as exc:  # created concurrently by another worker is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopologyError(f"cannot create topic {name}: {exc}") from exc
        else:
            log.info("created topic %s", name)
