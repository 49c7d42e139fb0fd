"""The producer side fails loudly, not silently or forever, when a service is unreachable.

No fixture is needed: an unreachable broker or registry is a loopback port nobody listens on
(or one that accepts connections and never answers). Each call runs under a deadline so a
hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from kis_stream.services import free_port

T = TypeVar("T")
DEADLINE_S = 60.0
SCHEMA = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]})
CONTEXT = SerializationContext("kis.unreachable", MessageField.VALUE)


def _within_deadline(call: Callable[[], T]) -> T:
    """Runs `call` in a worker; a hang becomes a failure rather than a stuck test run."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=DEADLINE_S)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still blocked after {DEADLINE_S:.0f}s: the client hangs")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers a request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def test_produce_to_unreachable_broker_reports_a_delivery_error(closed_port: int) -> None:
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{closed_port}",
            "message.timeout.ms": 1000,
            "log_level": 0,
        }
    )
    reports: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        reports.append(err)

    producer.produce("kis.unreachable", value=b"x", on_delivery=on_delivery)
    remaining = _within_deadline(lambda: producer.flush(30))
    assert remaining == 0, "flush must return once the message has failed"
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError._MSG_TIMED_OUT


def test_metadata_request_to_unreachable_broker_raises(closed_port: int) -> None:
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{closed_port}", "log_level": 0})
    with pytest.raises(KafkaException) as raised:
        _within_deadline(lambda: admin.list_topics(timeout=1.5))
    assert raised.value.args[0].code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)


def test_serializer_raises_when_registry_refuses_connections(closed_port: int) -> None:
    client = SchemaRegistryClient({"url": f"http://127.0.0.1:{closed_port}/apis/ccompat/v7"})
    serialize = AvroSerializer(client, SCHEMA)
    with pytest.raises(Exception, match=r"(?i)connect|refused") as raised:
        _within_deadline(lambda: serialize({"a": 1}, CONTEXT))
    assert not isinstance(raised.value, AssertionError)


def test_serializer_with_a_timeout_raises_when_registry_never_answers(silent_port: int) -> None:
    # confluent-kafka's registry client waits forever by default (timeout=None): a client
    # that must not hang sets "timeout", as this one does.
    client = SchemaRegistryClient(
        {"url": f"http://127.0.0.1:{silent_port}/apis/ccompat/v7", "timeout": 1, "max.retries": 0}
    )
    serialize = AvroSerializer(client, SCHEMA)
    with pytest.raises(Exception, match=r"(?i)timed out|timeout") as raised:
        _within_deadline(lambda: serialize({"a": 1}, CONTEXT))
    assert not isinstance(raised.value, AssertionError)
