"""`kis-stream bench sim`'s verdict: sustained, or which side fell behind."""

from __future__ import annotations

from typing import Any

from simulator.bench_sim import verdict


def result(**changes: Any) -> dict[str, Any]:
    base = {
        "target": 20_000.0,
        "records_per_s": 19_900,
        "server_delivered_per_s": 20_010,
        "server_written_off": 0,
        "server_cpu_share": 0.6,
        "server_queued_frames": 0,
    }
    return base | changes


def test_on_schedule_and_received_is_sustained() -> None:
    assert verdict(result()) == (True, "sustained")


def test_records_written_off_mean_the_server_fell_behind() -> None:
    ok, why = verdict(result(server_written_off=5_000, server_delivered_per_s=19_500))
    assert not ok and "fell 5,000 records behind" in why and "60% of a core" in why


def test_a_client_that_receives_less_is_blamed_with_the_queue() -> None:
    ok, why = verdict(result(records_per_s=15_000, server_queued_frames=700))
    assert not ok and "700 frames still queued" in why


def test_a_server_short_of_its_schedule_is_not_sustained() -> None:
    assert not verdict(result(server_delivered_per_s=18_000))[0]
