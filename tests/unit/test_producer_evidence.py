"""A failing producer fault test keeps its evidence (tests/integration/producer_oracle.py).

One failure of the dropped-connections test in CI could not be explained: its tmp dir with
the simulator's truth file and the producer's log was gone before anyone looked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.integration import producer_oracle
from tests.integration.producer_oracle import Message, keeps_evidence


@keeps_evidence
def _failing(tmp_path: Path) -> None:
    (tmp_path / "truth.jsonl").write_text('{"frame": 1}\n')
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "truth.jsonl").write_text('{"frame": 2}\n')
    (tmp_path / "spool.seg").write_bytes(b"not evidence")
    logging.getLogger("producer.session").debug("connection dropped, resubscribing")
    assert producer_oracle._current is not None
    producer_oracle._current.read.append(
        Message("t.h0stasp0", 1, 7, b"000660", {"symbol": "000660", "seq": 3})
    )
    raise AssertionError("('H0STASP0', '000660'): record sent at 5 is missing or out of order")


@keeps_evidence
def _passing(tmp_path: Path) -> int:
    (tmp_path / "truth.jsonl").write_text("{}\n")
    return 1


def test_a_failure_copies_truth_log_kafka_and_diagnosis_and_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIS_TEST_ARTIFACTS", str(tmp_path / "artifacts"))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AssertionError) as failure:
        _failing(tmp_path=work)
    message = str(failure.value)
    assert "missing or out of order" in message
    kept = Path(message.rsplit("evidence of this failure kept in ", 1)[1].strip())
    assert kept.parent == tmp_path / "artifacts" / "producer-faults"
    assert kept.name.startswith("_failing-")
    assert (kept / "truth.jsonl").read_text() == '{"frame": 1}\n'
    assert (kept / "second" / "truth.jsonl").read_text() == '{"frame": 2}\n'
    assert not (kept / "spool.seg").exists()
    assert "connection dropped, resubscribing" in (kept / "producer.log").read_text()
    assert "missing or out of order" in (kept / "diagnosis.txt").read_text()
    [entry] = [json.loads(line) for line in (kept / "kafka.jsonl").read_text().splitlines()]
    assert entry == {
        "topic": "t.h0stasp0",
        "partition": 1,
        "offset": 7,
        "key": "000660",
        "value": {"symbol": "000660", "seq": 3},
    }
    assert producer_oracle._current is None
    assert not logging.getLogger("producer").handlers  # (the test's log handler removed)


def test_a_pass_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_TEST_ARTIFACTS", str(tmp_path / "artifacts"))
    work = tmp_path / "work"
    work.mkdir()
    assert _passing(tmp_path=work) == 1
    assert not (tmp_path / "artifacts").exists()
