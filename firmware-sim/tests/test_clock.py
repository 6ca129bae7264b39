"""The simulated clock: started at launch, or anchored to a wall-clock instant."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gridclear.metersim.clock import SimClock


class Ticks:
    """A hand-driven clock, read as the wall clock or as the monotonic clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_clock_started_at_launch_runs_speed_times_the_monotonic_clock() -> None:
    monotonic = Ticks(500.0)
    clock = SimClock(start=1_000.0, speed=60.0, monotonic=monotonic)
    assert clock.now() == 1_000.0
    monotonic.now += 15.0
    assert clock.now() == 1_000.0 + 900.0  # a 15-minute slot in 15 wall seconds
    assert clock.wall_seconds(900.0) == 15.0


@given(
    launch_delay=st.floats(min_value=0, max_value=86_400),
    later=st.floats(min_value=0, max_value=3_600),
    speed=st.sampled_from([1.0, 60.0, 600.0]),
)
def test_anchored_clocks_agree_whenever_each_was_started(
    launch_delay: float, later: float, speed: float
) -> None:
    epoch, epoch_at = 1_900_000_000.0, 1_800_000_000.0
    wall = Ticks(epoch_at + launch_delay)
    monotonic = Ticks(0.0)
    early = SimClock.anchored(
        epoch=epoch, epoch_at=epoch_at, speed=speed, wall=wall, monotonic=monotonic
    )
    # Another process starts `later` wall seconds afterwards, with the same three values.
    wall.now += later
    monotonic.now += later
    late = SimClock.anchored(
        epoch=epoch, epoch_at=epoch_at, speed=speed, wall=wall, monotonic=monotonic
    )
    expected = epoch + (wall.now - epoch_at) * speed
    tolerance = 1e-6 * max(1.0, abs(expected))
    assert abs(early.now() - expected) <= tolerance
    assert abs(late.now() - expected) <= tolerance
    assert late.start >= early.start
