"""RepeatFilter: one line per kind per window, then a count of what was held back."""

from __future__ import annotations

import logging

import pytest

from kis_stream.logging import RepeatFilter, quiet_repeats
from processors import broker_outage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_kind_are_held_back_for_the_window_then_counted() -> None:
    clock = Clock()
    repeats = RepeatFilter(10.0, clock)
    first = _record("Unable connect to node with id %s: %s", 1, "after 0ms")
    assert repeats.filter(first) and first.getMessage().endswith("after 0ms")
    for n in range(5):
        clock.now = 1.0 + n
        assert not repeats.filter(
            _record("Unable connect to node with id %s: %s", 1, f"after {n}ms")
        )
    clock.now = 10.5
    after = _record("Unable connect to node with id %s: %s", 2, "after 7ms")
    assert repeats.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 2: after 7ms (5 more like this in the last 10 s not shown)"
    )
    clock.now = 11.0  # a new window began at 10.5
    assert not repeats.filter(_record("Unable connect to node with id %s: %s", 1, "after 9ms"))


def test_other_kinds_loggers_and_levels_pass() -> None:
    repeats = RepeatFilter(10.0, Clock())
    assert repeats.filter(_record("Unable to update metadata from [1]"))
    assert repeats.filter(_record("Heartbeat failed for group g"))
    assert repeats.filter(_record("Unable to update metadata from [1]", name="aiokafka.conn"))
    warning = _record("Unable to update metadata from [1]")
    warning.levelno = logging.WARNING
    assert repeats.filter(warning)
    assert not repeats.filter(_record("Unable to update metadata from [3]"))


def test_a_kind_let_through_after_a_quiet_window_says_nothing_of_repeats() -> None:
    clock = Clock()
    repeats = RepeatFilter(10.0, clock)
    assert repeats.filter(_record("lost the broker"))
    clock.now = 60.0
    again = _record("lost the broker")
    assert repeats.filter(again) and again.getMessage() == "lost the broker"


@pytest.fixture
def clean_logger() -> logging.Logger:
    logger = logging.getLogger("tests.log_repeats")
    logger.filters.clear()
    return logger


def test_quiet_repeats_puts_one_filter_on_each_logger_however_often_called(
    clean_logger: logging.Logger,
) -> None:
    quiet_repeats([clean_logger.name])
    quiet_repeats([clean_logger.name])
    assert sum(isinstance(f, RepeatFilter) for f in clean_logger.filters) == 1


def test_the_worker_quiets_aiokafka_and_its_own_librdkafka_clients() -> None:
    broker_outage.quiet_client_logs()
    for name in ("aiokafka", "aiokafka.consumer.group_coordinator", broker_outage.LIBRDKAFKA.name):
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, RepeatFilter) for f in filters), name


def test_a_counted_record_formats_under_faust_s_formatter() -> None:
    """mode's formatter wraps `args` in a tuple when it is not one: None would break it."""
    from mode.utils.logging import ExtensionFormatter

    clock = Clock()
    repeats = RepeatFilter(10.0, clock)
    repeats.filter(_record("FAIL %s: %s", "rdkafka#consumer-3", "refused"))
    repeats.filter(_record("FAIL %s: %s", "rdkafka#consumer-3", "refused"))
    clock.now = 11.0
    counted = _record("FAIL %s: %s", "rdkafka#consumer-3", "refused")
    assert repeats.filter(counted)
    line = ExtensionFormatter(fmt="%(message)s").format(counted)
    assert line.endswith("refused (1 more like this in the last 11 s not shown)")
