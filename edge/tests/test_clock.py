"""The gateway's time source: real UTC, or (demos and tests) a simulated clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridclear.edge.clock import simulated_time


class Ticks:
    """A hand-driven clock, read as the wall clock or as the monotonic clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@given(
    started_after=st.floats(min_value=0, max_value=86_400),
    runs=st.floats(min_value=0, max_value=3_600),
    speed=st.sampled_from([1.0, 60.0, 600.0]),
)
def test_simulated_time_is_epoch_at_epoch_at_and_runs_speed_times_as_fast(
    started_after: float, runs: float, speed: float
) -> None:
    epoch, epoch_at = 1_900_000_000.0, 1_800_000_000.0
    wall, monotonic = Ticks(epoch_at + started_after), Ticks(10.0)
    now = simulated_time(
        speed=speed, epoch=epoch, epoch_at=epoch_at, wall=wall, monotonic=monotonic
    )
    monotonic.now += runs
    expected = epoch + (started_after + runs) * speed
    assert now() == pytest.approx(expected, abs=1e-6 * expected)


def test_without_epoch_at_simulated_time_starts_at_the_epoch_and_never_goes_back() -> None:
    wall, monotonic = Ticks(1_800_000_000.0), Ticks(0.0)
    now = simulated_time(speed=60.0, epoch=1_900_000_000.0, wall=wall, monotonic=monotonic)
    assert now() == 1_900_000_000.0
    wall.now -= 3_600.0  # the system's clock is set back: simulated time does not follow
    monotonic.now += 15.0
    assert now() == 1_900_000_000.0 + 900.0


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed"):
        simulated_time(speed=0.0, epoch=0.0)
