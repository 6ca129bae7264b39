"""The timeslot lifecycle as pure functions (DESIGN §8).

::

    scheduled ──▶ open ──▶ closed ──▶ cleared ──▶ settling ──▶ settled
        │
        └──▶ cancelled   (gate closure passed before the slot ever opened)

A slot's times follow from its start and the market configuration it was created
with: it opens ``open_ahead_s`` before delivery, closes ``gate_closure_s`` before
delivery (gate closure), is cleared at once after closing, and starts settling
``settlement_grace_s`` after delivery ends. ``settling → settled`` belongs to
settlement, not to the scheduler.

:func:`next_state` says where a slot goes next at a given time; applying it until
it answers None gives the same end state whatever the order of ticks and however
long the scheduler was down, which is what makes catching up deterministic. A slot
that was never opened before its gate closure is cancelled: nobody could have
placed an order in it, so clearing it late would publish a result nobody traded in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from gridclear.cloud.market.config import MarketConfig

__all__ = [
    "TRANSITIONS",
    "SlotState",
    "SlotTimes",
    "next_state",
    "slot_start",
    "slot_times",
    "starts_to_create",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SlotState(StrEnum):
    SCHEDULED = "scheduled"
    """Created, not yet accepting orders."""
    OPEN = "open"
    """Accepting, amending and cancelling orders."""
    CLOSED = "closed"
    """Past gate closure: the book is frozen, clearing is due."""
    CLEARED = "cleared"
    """Price, volume, fills and trades are published."""
    SETTLING = "settling"
    """Delivery and its grace period are over; settlement is under way."""
    SETTLED = "settled"
    """Every trade is settled on the ledger."""
    CANCELLED = "cancelled"
    """The slot never opened; it holds no orders."""


TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    SlotState.SCHEDULED: frozenset({SlotState.OPEN, SlotState.CANCELLED}),
    SlotState.OPEN: frozenset({SlotState.CLOSED}),
    SlotState.CLOSED: frozenset({SlotState.CLEARED}),
    SlotState.CLEARED: frozenset({SlotState.SETTLING}),
    SlotState.SETTLING: frozenset({SlotState.SETTLED}),
    SlotState.SETTLED: frozenset(),
    SlotState.CANCELLED: frozenset(),
}
"""Every allowed step; anything else is refused by the store."""


@dataclass(frozen=True, slots=True)
class SlotTimes:
    starts_at: datetime
    ends_at: datetime
    opens_at: datetime
    closes_at: datetime
    settles_at: datetime


def slot_start(moment: datetime, config: MarketConfig) -> datetime:
    """The start of the slot holding ``moment`` (slots are aligned from the epoch)."""
    seconds = int((moment - _EPOCH).total_seconds() // config.slot_length_s)
    return _EPOCH + timedelta(seconds=seconds * config.slot_length_s)


def slot_times(starts_at: datetime, config: MarketConfig) -> SlotTimes:
    """The times of the slot starting at ``starts_at`` under ``config``."""
    length = timedelta(seconds=config.slot_length_s)
    return SlotTimes(
        starts_at=starts_at,
        ends_at=starts_at + length,
        opens_at=starts_at - timedelta(seconds=config.open_ahead_s),
        closes_at=starts_at - timedelta(seconds=config.gate_closure_s),
        settles_at=starts_at + length + timedelta(seconds=config.settlement_grace_s),
    )


def starts_to_create(now: datetime, config: MarketConfig) -> list[datetime]:
    """Starts of the slots that should exist at ``now``, oldest first.

    Those whose gate closure is still ahead and that open within one slot length
    from now: the open ones, plus the next scheduled one, so apps can show it.
    Slots whose gate closure has passed are never created late.
    """
    length = timedelta(seconds=config.slot_length_s)
    first = slot_start(now + timedelta(seconds=config.gate_closure_s), config) + length
    last = slot_start(now + timedelta(seconds=config.open_ahead_s), config) + length
    starts = []
    start = first
    while start <= last:
        starts.append(start)
        start += length
    return starts


def next_state(state: SlotState, times: SlotTimes, now: datetime) -> SlotState | None:
    """The state a slot in ``state`` moves to at ``now``, or None when it stays."""
    if state is SlotState.SCHEDULED:
        if now >= times.closes_at:
            return SlotState.CANCELLED
        return SlotState.OPEN if now >= times.opens_at else None
    if state is SlotState.OPEN:
        return SlotState.CLOSED if now >= times.closes_at else None
    if state is SlotState.CLOSED:
        return SlotState.CLEARED
    if state is SlotState.CLEARED:
        return SlotState.SETTLING if now >= times.settles_at else None
    return None
