"""Shared fixtures: one real Kafka broker and schema registry per test session.

Tests that need them ask for `services` (and carry `@pytest.mark.kafka`); nothing starts them
otherwise, so unit tests stay fast. Teardown is layered so no JVM outlives pytest: the
fixture's finaliser, an atexit hook and SIGTERM/SIGHUP handlers (kis_stream.services.stop_all),
and the kernel's parent-death signal for a pytest that is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from kis_stream import services as local

TopicFactory = Callable[..., str]


def _stop_and_reraise(signum: int, frame: FrameType | None) -> None:
    local.stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.LocalServices]:
    """A running single-node Kafka and Apicurio registry (ccompat API), shared by the session.

    Attributes: `.bootstrap` ("127.0.0.1:port"), `.registry_url` (the Confluent-compatible
    base URL for SchemaRegistryClient), `.env()`, `.stop_kafka()` / `.start_kafka()` (a broker
    outage: same port, data kept), `.kafka` / `.registry` (the process handles).
    """
    previous = {
        sig: signal.signal(sig, _stop_and_reraise) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    svc = local.LocalServices(tmp_path_factory.mktemp("services"))
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture(scope="session")
def topic_factory(services: local.LocalServices) -> TopicFactory:
    """`topic_factory(partitions=1, prefix="test", config=None) -> name`: a new, unique topic."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": services.bootstrap})

    def create(
        partitions: int = 1, prefix: str = "test", config: dict[str, str] | None = None
    ) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([topic])[name].result(30)
        return name

    return create
