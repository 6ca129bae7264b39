"""Interval energy from cumulative registers: aligned, exact, never negative."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridclear.shared.intervals import (
    DEFAULT_SLOT_MS,
    IntervalEnergy,
    boundaries,
    interval_energy,
    register_at,
    slot_start,
    split_at_resets,
)

SLOT = DEFAULT_SLOT_MS


def test_slots_are_aligned_to_the_epoch() -> None:
    assert slot_start(0) == 0
    assert slot_start(SLOT - 1) == 0
    assert slot_start(SLOT) == SLOT
    assert slot_start(1_767_225_600_000 + 123) == 1_767_225_600_000
    assert list(boundaries(1, 3 * SLOT)) == [SLOT, 2 * SLOT, 3 * SLOT]
    with pytest.raises(ValueError, match="positive"):
        slot_start(5, 0)


def test_boundary_between_samples_is_interpolated_and_rounded_down() -> None:
    run = [(0, 100), (1000, 103)]
    assert register_at(run, 0) == (100, False)
    assert register_at(run, 500) == (101, True)  # 101.5 rounds down
    assert register_at(run, 1000) == (103, False)
    assert register_at(run, 1001) is None


def test_energy_is_the_register_difference_at_the_boundaries() -> None:
    samples = [(0, 1000), (SLOT // 2, 1400), (SLOT, 1500), (2 * SLOT, 2500)]
    assert interval_energy(samples) == [
        IntervalEnergy(0, SLOT, 500, interpolated=False, counter_reset=False),
        IntervalEnergy(SLOT, 2 * SLOT, 1000, interpolated=False, counter_reset=False),
    ]


def test_incomplete_intervals_are_left_out() -> None:
    assert interval_energy([(10, 0), (SLOT + 10, 100)]) == []
    assert [e.start_ms for e in interval_energy([(-10, 0), (SLOT + 10, 100)])] == [0]


def test_reset_is_flagged_and_never_negative() -> None:
    samples = [(0, 5000), (SLOT // 3, 5100), (2 * SLOT // 3, 20), (SLOT, 70)]
    (energy,) = interval_energy(samples)
    assert energy.counter_reset
    assert energy.wh == 100 + 50  # measured on either side; the gap is unknown


@st.composite
def _series(draw: st.DrawFn) -> list[tuple[int, int]]:
    times = draw(st.lists(st.integers(0, 10 * SLOT), min_size=2, max_size=60, unique=True))
    steps = draw(st.lists(st.integers(0, 5000), min_size=len(times), max_size=len(times)))
    total, series = 0, []
    for ts, step in zip(sorted(times), steps, strict=True):
        total += step
        series.append((ts, total))
    return series


@given(_series())
def test_intervals_add_up_to_the_change_between_their_outer_boundaries(
    series: list[tuple[int, int]],
) -> None:
    energies = interval_energy(series)
    if not energies:
        return
    (run,) = split_at_resets(series)
    first = register_at(run, energies[0].start_ms)
    last = register_at(run, energies[-1].end_ms)
    assert first is not None
    assert last is not None
    assert sum(e.wh for e in energies) == last[0] - first[0]
    assert all(e.wh >= 0 and not e.counter_reset for e in energies)
    assert [e.start_ms for e in energies] == list(
        range(energies[0].start_ms, energies[-1].end_ms, SLOT)
    )


@given(_series(), st.integers(1, 5))
def test_resets_never_make_energy_negative(series: list[tuple[int, int]], cut: int) -> None:
    cut = min(cut, len(series) - 1)
    # Swap the meter: every later sample starts again from a small register value.
    reset = series[:cut] + [(ts, wh - series[cut][1]) for ts, wh in series[cut:]]
    for energy in interval_energy(reset):
        assert energy.wh >= 0
