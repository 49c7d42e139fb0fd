"""`kis-stream process` waits at start-up for a registry that does not answer yet."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import click
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from processors.cli import register_schemas

URL = "http://reg-user:reg-pass@registry.internal:8081/apis/ccompat/v7"


class Registering:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors, self.calls = errors, 0
        self.settings = SimpleNamespace(schema_registry_url=URL)

    def register_schemas(self) -> dict[str, int]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"kis.bars.1s": 1}


def test_a_registry_that_does_not_answer_yet_is_waited_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    processors: Any = Registering([ConnectionError("refused")] * 3)
    slept: list[float] = []
    register_schemas(processors, 60, sleep=slept.append)
    assert processors.calls == 4 and slept == [1.0] * 3
    err = capsys.readouterr().err
    assert "waiting for the schema registry at http://registry.internal:8081/apis/ccompat/v7" in err
    assert "reg-pass" not in err and "reg-user" not in err


def test_a_refused_schema_stops_the_worker_at_once() -> None:
    processors: Any = Registering([SchemaRegistryError(409, 409, "incompatible schema")])
    with pytest.raises(click.ClickException, match="incompatible schema"):
        register_schemas(processors, 60, sleep=lambda s: None)
    assert processors.calls == 1


def test_the_wait_has_a_bound() -> None:
    processors: Any = Registering([ConnectionError("refused")] * 100)
    with pytest.raises(click.ClickException, match="cannot register the output schemas: refused"):
        register_schemas(processors, 0, sleep=lambda s: None)
    assert processors.calls == 1
