"""Registrations KIS refuses, through the real broker, registry and simulator.

The simulator's `refuse_subscribe` fault answers registration requests with the errors KIS
sends: MAX SUBSCRIBE OVER (the producer asks again on the same connection after a backoff)
and JSON PARSING ERROR : invalid tr_key (asking again cannot help: the producer reports it
and stays not ready). The oracle is the simulator's truth log and an independent consumer,
as in tests/integration/test_producer.py.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from producer.service import ProducerService
from tests.integration.producer_oracle import (
    Message,
    Registry,
    assert_exactly_the_truth,
    kafka_by_stream,
    producer_settings,
    read_topics,
    reported_gaps,
    running,
    settle,
    simulator,
    truth_by_stream,
    wait_until,
)
from tests.integration.test_producer import all_topics

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

SYMBOLS = ("005930", "000660")


def refusals(service: ProducerService, code: str) -> float:
    """kis_subscribe_refusals_total for `code`, summed over sessions."""
    return sum(
        sample.value
        for metric in service.metrics.subscribe_refusals.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["code"] == code
    )


def status_events(messages: list[Message], prefix: str, event: str) -> list[dict[str, Any]]:
    return [m.value for m in messages if m.topic == prefix + "status" and m.value["event"] == event]


def test_refused_registrations_are_retried_until_accepted_and_nothing_sent_is_lost(
    services: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="producer.session")
    at_start = [
        {"tr_id": "H0STCNT0", "tr_key": "005930", "times": 3},
        {"tr_id": "H0STASP0", "tr_key": "000660", "times": 2},
    ]
    with simulator(tmp_path, SYMBOLS, speed=4.0, faults={"refuse_subscribe": at_start}) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX"],
            kis_tr_groups=["trades", "books"],
        )  # fmt: skip
        with running(settings) as service:
            wait_until(lambda: service.ready()[0], 30, "every registration accepted")
            assert sim.stats()["faults"]["subscribe_refused"] == 5
            time.sleep(3)
            # On a reconnect too: every trade registration refused twice, then accepted.
            sim.set_faults({"refuse_subscribe": {"tr_id": "H0STCNT0", "times": 2}})
            assert sim.set_faults({"drop_connections": True})["dropped"] >= 1
            wait_until(lambda: not service.ready()[0], 5, "the drop to be noticed")
            wait_until(lambda: service.ready()[0], 30, "resubscribed after refusals")
            assert sim.stats()["faults"]["subscribe_refused"] == 5 + 2 * len(SYMBOLS)
            time.sleep(3)
            sim.stop()
            settle(service)
            assert refusals(service, "MAX_SUBSCRIBE_OVER") == 5 + 2 * len(SYMBOLS)
            subscriptions = {(s.tr_id, s.tr_key) for s in service.sessions[0].subscribed}
    assert ("H0STCNT0", "005930") in subscriptions and ("H0STASP0", "000660") in subscriptions

    messages = read_topics(
        services, all_topics(settings.topic_prefix), Registry(services.registry_url)
    )
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    kafka = kafka_by_stream(messages, settings.topic_prefix)
    matched = assert_exactly_the_truth(truth, kafka, reported_gaps(messages, settings.topic_prefix))
    assert matched > 0
    for stream in (("H0STCNT0", "005930"), ("H0STASP0", "000660")):
        assert kafka.get(stream), f"{stream}: no data after the registration was accepted"

    prefix = settings.topic_prefix
    failed = Counter(
        (e["tr_id"], e["tr_key"]) for e in status_events(messages, prefix, "subscribe_failed")
    )
    assert failed == {
        ("H0STCNT0", "005930"): 3 + 2, ("H0STASP0", "000660"): 2, ("H0STCNT0", "000660"): 2,
    }  # fmt: skip
    for event in status_events(messages, prefix, "subscribe_failed"):
        assert event["reason"].startswith("MAX_SUBSCRIBE_OVER") and "retry in" in event["reason"]
    refused_logs = [r for r in caplog.records if r.getMessage() == "KIS refused a registration"]
    assert len(refused_logs) == 5 + 2 * len(SYMBOLS)
    assert all(r.levelno == logging.ERROR for r in refused_logs)
    accepted = [r for r in caplog.records if r.getMessage() == "registration accepted on retry"]
    assert len(accepted) == 2 + len(SYMBOLS)


def test_invalid_tr_key_refusal_is_not_retried_and_leaves_the_producer_not_ready(
    services: Any, tmp_path: Path
) -> None:
    rule = {"tr_id": "H0STASP0", "tr_key": "005930", "times": 100, "reply": "invalid_tr_key"}
    with simulator(tmp_path, SYMBOLS, speed=4.0, faults={"refuse_subscribe": rule}) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX"],
            kis_tr_groups=["trades", "books"],
        )  # fmt: skip
        with running(settings) as service:
            session = service.sessions[0]
            wait_until(lambda: session.state.value == "streaming", 30, "the other registrations")
            time.sleep(3)  # a retry (initial backoff 0.2 s) would have happened by now
            ready, detail = service.ready()
            assert not ready and service.live()[0]
            assert "registrations refused" in detail and "H0STASP0/005930 (INVALID_TR_KEY" in detail
            assert sim.stats()["faults"]["subscribe_refused"] == 1, "asked again"
            assert refusals(service, "INVALID_TR_KEY") == 1
            assert len(session.subscribed) == 3
            sim.stop()
            settle(service)
    messages = read_topics(
        services, all_topics(settings.topic_prefix), Registry(services.registry_url)
    )
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    kafka = kafka_by_stream(messages, settings.topic_prefix)
    assert ("H0STASP0", "005930") not in truth and ("H0STASP0", "005930") not in kafka
    assert assert_exactly_the_truth(truth, kafka) > 0
    (failed,) = status_events(messages, settings.topic_prefix, "subscribe_failed")
    assert (failed["tr_id"], failed["tr_key"]) == ("H0STASP0", "005930")
    assert failed["reason"].startswith("INVALID_TR_KEY") and "retry" not in failed["reason"]
