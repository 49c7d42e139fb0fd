"""The producer under faults: broker outage, dropped connections, bad frames, bad plans, logs.

Oracle as in test_producer.py: the simulator's truth log, an independent consumer. A failure
keeps its evidence (truth files, the producer's log, what the oracle read, the diagnosis) in
.artifacts/producer-faults/ or $KIS_TEST_ARTIFACTS, named in the failure message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kis_stream.settings import AppCredential
from producer.plan import PlanError
from producer.redecode import redecode
from producer.service import ProducerService
from tests.integration.producer_oracle import (
    CATALOGUE,
    Registry,
    assert_exactly_the_truth,
    kafka_by_stream,
    keeps_evidence,
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
ROOT = Path(__file__).resolve().parents[2]


@keeps_evidence
def test_broker_down_30s_mid_stream_nothing_lost_nothing_duplicated(
    services: Any, tmp_path: Path
) -> None:
    with simulator(tmp_path, SYMBOLS, speed=4.0) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX", "NXT"],
            kis_tr_groups=["trades", "books", "program"], producer_memory_messages=1000,
        )  # fmt: skip
        with running(settings) as service:
            wait_until(lambda: service.ready()[0], 30, "streaming")
            time.sleep(2)
            services.stop_kafka()
            spool_peak = 0
            outage_end = time.monotonic() + 30
            while time.monotonic() < outage_end:
                assert service.live()[0], "the producer must stay up while the broker is down"
                assert service.sessions[0].ready, "the socket must keep being read"
                sink = service.sink
                assert sink is not None
                spool_peak = max(spool_peak, sink.spool_depth)
                time.sleep(0.25)
            services.start_kafka()
            time.sleep(3)
            sim.stop()
            settle(service, timeout=120)
            assert service.sink is not None and service.sink.spool_depth == 0
            assert service.sink.failed == 0, "records set aside as refused for good"
    assert spool_peak > 0, "the outage should have pushed records to the on-disk spool"
    registry = Registry(services.registry_url)
    messages = read_topics(services, all_topics(settings.topic_prefix), registry)
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    assert_exactly_the_truth(truth, kafka_by_stream(messages, settings.topic_prefix))


@keeps_evidence
def test_sigterm_while_broker_down_spools_and_next_run_sends_exactly_once(
    services: Any, tmp_path: Path
) -> None:
    with simulator(tmp_path, SYMBOLS, speed=4.0) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX"],
            kis_tr_groups=["trades", "books"], producer_memory_messages=500,
            shutdown_flush_timeout_s=2,
        )  # fmt: skip
        service = ProducerService(settings)
        service.start()
        try:
            wait_until(lambda: service.ready()[0], 30, "streaming")
            time.sleep(2)
            services.stop_kafka()
            time.sleep(4)
            sim.stop()
            wait_until(lambda: service.pipeline is not None and service.pipeline.backlog == 0,
                       10, "frames handled")  # fmt: skip
        finally:
            service.stop()  # what SIGTERM does: flush 2 s, spool the rest
    assert service.spooled_at_close > 0
    segments = list((tmp_path / "spool" / "segments").glob("*.seg"))
    assert segments, "unacknowledged records must be on disk"
    services.start_kafka()

    with simulator(tmp_path / "second", SYMBOLS) as sim2:
        again = settings.model_copy(update={"kis_url": sim2.base_url})
        with running(again) as second:
            sink = second.sink
            assert sink is not None
            wait_until(lambda: sink.spool_depth == 0, 120, "the left-over spool to drain")
            sim2.stop()
            settle(second)
    assert not list((tmp_path / "spool" / "segments").glob("*.seg"))
    messages = read_topics(
        services, all_topics(settings.topic_prefix), Registry(services.registry_url)
    )
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    kafka = kafka_by_stream(messages, settings.topic_prefix)
    second_truth = truth_by_stream(tmp_path / "second" / "truth.jsonl")
    for stream, entries in second_truth.items():
        truth.setdefault(stream, []).extend(entries)
    assert_exactly_the_truth(truth, kafka)


@keeps_evidence
def test_dropped_connections_resubscribe_rekey_and_report_gaps(
    services: Any, tmp_path: Path
) -> None:
    drops = 3
    with simulator(tmp_path, SYMBOLS, speed=4.0) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX", "NXT"],
            kis_tr_groups=["trades", "books", "notices"], kis_hts_id="hts0001",
        )  # fmt: skip
        with running(settings) as service:
            wait_until(lambda: service.ready()[0], 30, "streaming")
            for i in range(drops):
                time.sleep(2.5)
                if i == 1:
                    sim.set_faults({"expire_approval_keys": True})  # re-issue on rejection
                assert sim.set_faults({"drop_connections": True})["dropped"] >= 1
                wait_until(lambda: not service.ready()[0], 5, "the drop to be noticed")
                wait_until(lambda: service.ready()[0], 30, "resubscribed")
            time.sleep(2.5)
            sim.stop()
            settle(service)
            reconnects = sum(s.reconnects for s in service.sessions)
    assert reconnects >= drops
    messages = read_topics(
        services, all_topics(settings.topic_prefix), Registry(services.registry_url)
    )
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    kafka = kafka_by_stream(messages, settings.topic_prefix)
    gaps = reported_gaps(messages, settings.topic_prefix)
    matched = assert_exactly_the_truth(truth, kafka, gaps)
    sent = sum(len(entries) for entries in truth.values())
    assert sent - matched <= 20 * drops, "only what was in flight at a drop may be missing"
    assert any(stream[0] == "H0STCNI0" for stream in truth), "encrypted notices were sent"
    status = [m.value for m in messages if m.topic == settings.topic_prefix + "status"]
    gap_events = [s for s in status if s["event"] == "gap"]
    assert len(gap_events) >= drops
    for gap in gap_events:
        assert gap["gap_from"] <= gap["gap_to"] and gap["reason"]
    assert any("approval" in (s["reason"] or "") for s in status if s["event"] == "disconnected")

    # redecode re-keys the encrypted notices from the acknowledgements kept in kis.frames,
    # connection by connection, and rebuilds exactly the same records.
    to_prefix = settings.topic_prefix + "re."
    redecode(settings, to_prefix=to_prefix)
    rebuilt = read_topics(services, all_topics(to_prefix), Registry(services.registry_url))
    assert assert_exactly_the_truth(truth, kafka_by_stream(rebuilt, to_prefix), gaps) == matched


@keeps_evidence
def test_malformed_and_drifted_frames_dead_letter_and_pipeline_keeps_running(
    services: Any, tmp_path: Path
) -> None:
    kinds = ["bad_count", "garbage", "unknown_tr", "bad_utf8"]
    with simulator(tmp_path, SYMBOLS, speed=4.0) as sim:
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=list(SYMBOLS), kis_venues=["KRX"],
            kis_tr_groups=["trades", "books"],
        )  # fmt: skip
        with running(settings) as service:
            wait_until(lambda: service.ready()[0], 30, "streaming")
            sim.set_faults({"malformed_rate": 0.05, "malformed_kinds": kinds,
                            "extra_field": {"tr_id": "H0STCNT0", "value": "X9"}})  # fmt: skip
            time.sleep(6)
            sim.set_faults({"clear": True})
            time.sleep(1)
            sim.stop()
            settle(service)
            assert service.live()[0]
            drift = service.metrics.drift.labels("H0STCNT0")._value.get()
    assert drift > 0
    messages = read_topics(
        services, all_topics(settings.topic_prefix), Registry(services.registry_url)
    )
    truth = truth_by_stream(tmp_path / "truth.jsonl")
    assert_exactly_the_truth(truth, kafka_by_stream(messages, settings.topic_prefix))
    assert any(e["fields"][-1] == "X9" for s in truth.values() for e in s)

    from simulator.truth import read_truth

    bad_frames = {
        (e["session"], e["frame"])
        for e in read_truth(tmp_path / "truth.jsonl")
        if e.get("sent") and str(e.get("fault", "")).startswith("malformed")
    }
    dead = [m.value for m in messages if m.topic == settings.topic_prefix + "dead-letter"]
    assert len(dead) == len(bad_frames) > 0
    codes = Counter(d["reason"].split(":", 1)[0] for d in dead)
    assert set(codes) <= {"utf8", "malformed", "unknown_tr", "bad_count", "width", "bad_number"}
    frames = {m.value["frame"] for m in messages if m.topic == settings.topic_prefix + "frames"}
    assert all(d["raw"] in frames for d in dead), "each dead letter holds the frame as received"


@keeps_evidence
def test_plan_over_capacity_fails_at_startup_and_connects_nothing(
    services: Any, tmp_path: Path
) -> None:
    with simulator(tmp_path, SYMBOLS) as sim:
        symbols = [f"{i:06d}" for i in range(1, 15)]  # 14 x 3 TRs = 42 > 41
        settings = producer_settings(
            services, sim, tmp_path, kis_symbols=symbols, kis_venues=["KRX"],
            kis_tr_groups=["trades", "books", "program"],
            kis_app_keys=[AppCredential.parse("only-key:only-secret")],
        )  # fmt: skip
        with pytest.raises(PlanError, match=r"needs 42 registrations .* allow only 41"):
            ProducerService(settings).start()
        assert sim.stats()["sessions"] == []
        env = {**os.environ, "KIS_URL": sim.base_url, "KIS_APP_KEYS": "only-key:only-secret",
               "KIS_SYMBOLS": ",".join(symbols), "KIS_VENUES": "KRX",
               "KIS_TR_GROUPS": "trades,books,program", "METRICS_PORT": "0"}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "kis_stream.cli", "produce"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert "needs 42 registrations" in result.stderr and "add 1 app key" in result.stderr


@keeps_evidence
def test_cli_sigterm_exits_0_records_frames_and_logs_no_secret(
    services: Any, tmp_path: Path
) -> None:
    app_key, app_secret = "PSappkey0123456789abcdef", "secret-XYZ-0123456789abcdefghij"
    record = tmp_path / "rec.jsonl.gz"
    with simulator(tmp_path, SYMBOLS, speed=4.0, app_keys={app_key: app_secret}) as sim:
        env = {
            **os.environ, "KIS_URL": sim.base_url, "KIS_APP_KEY": app_key,
            "KIS_APP_SECRET": app_secret, "KIS_SYMBOLS": ",".join(SYMBOLS), "KIS_VENUES": "KRX",
            "KIS_TR_GROUPS": "trades,notices", "KIS_HTS_ID": "hts0001",
            "KAFKA_BOOTSTRAP": services.bootstrap, "SCHEMA_REGISTRY_URL": services.registry_url,
            "TOPIC_PREFIX": "cli.", "PRODUCER_SPOOL_DIR": str(tmp_path / "spool"),
            "METRICS_PORT": "0", "LOG_LEVEL": "DEBUG", "KIS_SUBSCRIBE_INTERVAL_S": "0.01",
            "KIS_RECONNECT_INITIAL_S": "0.2", "KIS_RECONNECT_MAX_S": "1",
        }  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "kis_stream.cli", "produce", "--record", str(record)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_until(lambda: _subscribed(sim) >= 3, 60, "the CLI producer to subscribe")
            time.sleep(3)
            sim.set_faults({"expire_approval_keys": True, "drop_connections": True})
            wait_until(lambda: _subscribed(sim) >= 3, 30, "resubscription")
            time.sleep(2)
            server = sim.server
            approvals = list(getattr(server, "registry", server).approvals)
            ciphers = [c for s in sim.server.sessions.values() for c in s.cipher]
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    log = (out + err).decode("utf-8", "replace")
    lines = [line for line in err.decode().splitlines() if line.startswith("{")]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    assert "producer stopped" in log and "approval" in log
    secrets = [app_key, app_secret, *approvals, *[c for c in ciphers if isinstance(c, str)]]
    assert len(secrets) >= 4
    for secret in secrets:
        assert secret not in log, "a secret reached the log"
    from producer.record_file import read_recording

    recorded = read_recording(record)
    assert len(recorded) > 10
    assert all(r[1][:1] in "01{" for r in recorded)


def _subscribed(sim: Any) -> int:
    return sum(len(s["subscriptions"]) for s in sim.stats()["sessions"])


@keeps_evidence
def test_every_catalogue_tr_has_a_topic_created(services: Any, tmp_path: Path) -> None:
    with simulator(tmp_path, SYMBOLS) as sim:
        settings = producer_settings(services, sim, tmp_path, kis_symbols=["005930"],
                                     kis_venues=["KRX"], kis_tr_groups=["trades"])  # fmt: skip
        with running(settings) as service:
            wait_until(lambda: service.ready()[0], 30, "streaming")
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": services.bootstrap}).list_topics(timeout=10).topics
    for name in all_topics(settings.topic_prefix):
        assert name in topics
        if name.removeprefix(settings.topic_prefix)[:1] == "h":
            assert len(topics[name].partitions) == 3
    assert len(CATALOGUE) == len([t for t in topics if t.startswith(settings.topic_prefix + "h")])
