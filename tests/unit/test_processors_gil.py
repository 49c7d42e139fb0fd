"""The worker's GIL switch interval (processors/cli.py `share_the_gil`, docs/benchmarks.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click
import pydantic
import pytest

from processors import cli
from processors.config import ProcessorSettings
from processors.topology import TopologyError


@pytest.fixture
def interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_default_is_1_ms_and_must_be_positive() -> None:
    assert ProcessorSettings().gil_switch_interval_ms == 1.0  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        ProcessorSettings(gil_switch_interval_ms=0)  # type: ignore[call-arg]


def test_the_worker_sets_it_before_anything_else(
    interval: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_topics(settings: ProcessorSettings) -> dict[str, int]:
        raise TopologyError("no broker here")

    monkeypatch.setattr(cli, "prepare", no_topics)
    sys.setswitchinterval(0.005)
    with pytest.raises(click.ClickException, match="no broker here"):
        cli.run(ProcessorSettings(gil_switch_interval_ms=2.5))  # type: ignore[call-arg]
    assert sys.getswitchinterval() == pytest.approx(0.0025)
