"""KRX tick-size rules used by every simulated domestic price."""

import pytest

from simulator.ticks import floor_to_tick, is_valid_price, tick_down, tick_size, tick_up


@pytest.mark.parametrize(
    ("price", "tick"),
    [(1_999, 1), (2_000, 5), (4_995, 5), (5_000, 10), (19_990, 10), (20_000, 50),
     (49_950, 50), (50_000, 100), (199_900, 100), (200_000, 500), (499_500, 500),
     (500_000, 1_000), (1_234_000, 1_000)],
)  # fmt: skip
def test_tick_size_bands(price: int, tick: int) -> None:
    assert tick_size(price) == tick


@pytest.mark.parametrize("price", [1_999, 2_000, 4_995, 5_000, 49_950, 50_000, 500_000])
def test_up_and_down_stay_on_the_grid_and_invert(price: int) -> None:
    assert is_valid_price(tick_up(price))
    assert is_valid_price(tick_down(price))
    assert tick_down(tick_up(price)) == price
    assert tick_up(tick_down(price)) == price


def test_crossing_a_band_boundary_uses_each_sides_tick() -> None:
    assert tick_up(49_950) == 50_000
    assert tick_up(50_000) == 50_100
    assert tick_down(50_000) == 49_950


@pytest.mark.parametrize("raw", [1.4, 1_999.9, 50_049.0, 71_234.5, 512_345.0])
def test_floor_to_tick_gives_the_valid_price_at_or_below(raw: float) -> None:
    p = floor_to_tick(raw)
    assert is_valid_price(p)
    assert p <= raw < tick_up(p)


def test_invalid_prices_are_rejected() -> None:
    assert not is_valid_price(50_050)
    assert not is_valid_price(0)
