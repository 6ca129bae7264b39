"""The timeslot lifecycle and the market configuration, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridclear.cloud.market.config import ConfigError, MarketConfig
from gridclear.cloud.market.timeslots import (
    TRANSITIONS,
    SlotState,
    next_state,
    slot_start,
    slot_times,
    starts_to_create,
)

CONFIG = MarketConfig()  # 15-minute slots, open a day ahead, gate closure 5 min before
T = datetime(2026, 5, 4, 10, 15, tzinfo=UTC)


def _walk(state: SlotState, start: datetime, now: datetime) -> list[SlotState]:
    times = slot_times(start, CONFIG)
    path = [state]
    while (target := next_state(path[-1], times, now)) is not None:
        assert target in TRANSITIONS[path[-1]]
        path.append(target)
    return path


def test_slots_are_aligned_to_their_length_from_the_epoch() -> None:
    assert slot_start(T + timedelta(minutes=14, seconds=59), CONFIG) == T
    times = slot_times(T, CONFIG)
    assert times.ends_at == T + timedelta(minutes=15)
    assert times.opens_at == T - timedelta(days=1)
    assert times.closes_at == T - timedelta(minutes=5)
    assert times.settles_at == T + timedelta(minutes=30)


def test_a_slot_walks_its_whole_life_as_time_passes() -> None:
    seen = [_walk(SlotState.SCHEDULED, T, T - timedelta(days=2))]
    seen.append(_walk(SlotState.SCHEDULED, T, T - timedelta(hours=1)))
    seen.append(_walk(SlotState.OPEN, T, T - timedelta(minutes=5)))
    seen.append(_walk(SlotState.CLEARED, T, T + timedelta(minutes=30)))
    assert seen == [
        [SlotState.SCHEDULED],
        [SlotState.SCHEDULED, SlotState.OPEN],
        [SlotState.OPEN, SlotState.CLOSED, SlotState.CLEARED],
        [SlotState.CLEARED, SlotState.SETTLING],
    ]


def test_catching_up_reaches_the_same_state_as_ticking_along() -> None:
    late = T + timedelta(hours=3)
    assert _walk(SlotState.OPEN, T, late)[-1] is SlotState.SETTLING
    stepwise = SlotState.OPEN
    now = T - timedelta(minutes=20)
    while now <= late:
        stepwise = _walk(stepwise, T, now)[-1]
        now += timedelta(minutes=1)
    assert stepwise is SlotState.SETTLING
    # A slot that never opened before gate closure is cancelled, never cleared late.
    assert _walk(SlotState.SCHEDULED, T, late) == [SlotState.SCHEDULED, SlotState.CANCELLED]
    # Settlement, not the scheduler, finishes a slot.
    assert _walk(SlotState.SETTLING, T, late + timedelta(days=9)) == [SlotState.SETTLING]


def test_the_slots_to_create_are_those_still_before_gate_closure() -> None:
    config = MarketConfig(slot_length_s=900, open_ahead_s=3600, gate_closure_s=300)
    now = T + timedelta(minutes=11)  # 10:26: the 10:30 slot closed at 10:25
    starts = starts_to_create(now, config)
    # 10:45 to 11:15 are open (they open an hour ahead); 11:30 is the next, scheduled.
    assert starts == [T + timedelta(minutes=m) for m in (30, 45, 60, 75)]
    assert all(slot_times(s, config).closes_at > now for s in starts)
    assert slot_times(starts[-1], config).opens_at > now


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slot_length_s": 700}, "slot_length_s"),
        ({"price_floor": 10, "price_cap": 5}, "price_cap"),
        ({"min_quantity_wh": 0}, "max_quantity_wh"),
        ({"quantity_step_wh": 0}, "quantity_step_wh"),
        ({"gate_closure_s": 7200, "open_ahead_s": 3600}, "open_ahead_s"),
        ({"colour": 1}, "colour"),
        ({"price_cap": 1.5}, "price_cap"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_setting(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        CONFIG.updated(**changes)
    assert caught.value.field == field


def test_quantity_and_price_bounds_explain_themselves() -> None:
    config = CONFIG.updated(quantity_step_wh=10, price_cap=500)
    assert config.quantity_problem(25) == "quantity must be a multiple of 10 Wh"
    assert config.quantity_problem(30) is None
    assert config.price_problem(501) is not None
    assert config.price_problem(500) is None
