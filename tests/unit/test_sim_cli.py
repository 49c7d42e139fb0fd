"""`kis-stream sim` options and the market clock."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from kis_stream.cli import main
from simulator.cli import build_config, sim
from simulator.clock import MarketClock, hhmmss, parse_time_of_day


def parse(*args: str) -> dict[str, object]:
    ctx = sim.make_context("sim", list(args))
    return dict(ctx.params)


def test_help_documents_every_option() -> None:
    result = CliRunner().invoke(main, ["sim", "--help"])
    assert result.exit_code == 0
    for param in sim.params:
        for opt in param.opts:
            assert opt in result.output


def test_defaults_are_a_calm_loopback_market_at_nine() -> None:
    config = build_config(parse())
    assert config.host == "127.0.0.1" and config.port == 0
    assert config.app_keys == {} and config.load is None and config.replay is None
    assert config.start == 9 * 3600 and config.speed == 1.0 and config.date is None
    assert config.max_subscriptions == 41
    assert config.market.symbols == ("005930", "000660", "035420", "005380", "051910")


def test_options_reach_the_config() -> None:
    config = build_config(
        parse("--app-key", "K1:S1", "--app-key", "K2:S2", "--start", "08:29:50", "--speed", "60",
              "--date", "2026-10-05", "--symbols", "005930, 000660", "--load", "20000",
              "--extra-field", "H0STCNT0", "--missing-fields", "H0STASP0:4",
              "--malformed-rate", "0.01", "--seed", "9")
    )  # fmt: skip
    assert config.app_keys == {"K1": "S1", "K2": "S2"}
    assert config.start == 8 * 3600 + 29 * 60 + 50 and config.speed == 60
    assert config.date == dt.date(2026, 10, 5)
    assert config.market.symbols == ("005930", "000660") and config.market.seed == 9
    assert config.load == 20000
    assert config.faults == {
        "malformed_rate": 0.01,
        "extra_field": [{"tr_id": "H0STCNT0"}],
        "missing_fields": [{"tr_id": "H0STASP0", "count": 4}],
    }


@pytest.mark.parametrize(
    "args", [("--app-key", "nosecret"), ("--start", "25:00"), ("--missing-fields", "H0STCNT0:x")]
)
def test_bad_values_are_usage_errors(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, ["sim", *args])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("08:29:50", 30590), ("0930", 34200), ("153000", 55800)]
)
def test_time_of_day_parsing(text: str, seconds: float) -> None:
    assert parse_time_of_day(text) == seconds
    assert hhmmss(seconds) == text.replace(":", "").ljust(6, "0")


def test_market_clock_runs_at_speed_from_its_start() -> None:
    now = [100.0]
    clock = MarketClock(9 * 3600, date=dt.date(2026, 10, 5), speed=60, monotonic=lambda: now[0])
    assert clock.stamp() == "20261005090000"
    now[0] += 1.5
    assert clock.now() == 9 * 3600 + 90
    assert clock.stamp() == "20261005090130"
    assert clock.epoch_seconds(0) == dt.datetime(2026, 10, 4, 15, tzinfo=dt.UTC).timestamp()
