"""Whether a signed message's times are plausible, given when it was received. Pure.

A verified signature says who signed a message, not that its clock was right. A
gateway whose clock reset signs readings dated 1970; a wrong clock or a faulty (or
hostile) gateway can date them a century ahead. Such a reading is no use to
settlement, and stored among a meter's samples it once made the interval refresh
walk every 15-minute slot between it and the others. So a message is judged
against the times the cloud knows, and refused as a whole (``implausible_time``,
quarantined with its bytes) when it falls outside :class:`TimeWindow`:

- nothing (signing, sampling) may lie more than ``max_ahead_ms`` after the message
  was received, and no reading more than ``max_ahead_ms`` after it was signed (the
  two clocks are the gateway's; the margin is for their error against the cloud's);
- nothing may lie more than ``max_age_ms`` before it was received, and no reading
  more than ``max_age_ms`` before it was signed.

The age bound is generous on purpose: a gateway that was offline resends its
outbox, oldest first, days or weeks later (docs/PROTOCOL.md), and re-signs the part
it thinned at that time, so readings can be as old as the outage both against
receipt and against signing. Only what no outbox can hold is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gridclear.shared.protocol import ReadingsPayload

__all__ = ["DEFAULT_MAX_AGE_MS", "DEFAULT_MAX_AHEAD_MS", "TimeWindow", "implausible_time"]

DEFAULT_MAX_AHEAD_MS = 10 * 60 * 1000
"""Ten minutes: far above a synchronised clock's error, far below anything absurd."""

DEFAULT_MAX_AGE_MS = 90 * 24 * 3600 * 1000
"""Ninety days: an outbox drained after a season's outage still gets in."""


@dataclass(frozen=True)
class TimeWindow:
    """How far a message's times may lie from when it was signed and received."""

    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS
    max_age_ms: int = DEFAULT_MAX_AGE_MS

    def __post_init__(self) -> None:
        if self.max_ahead_ms < 0 or self.max_age_ms < 0:
            raise ValueError("the plausibility window's bounds must not be negative")


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _hours(ms: int) -> str:
    # Integer arithmetic: a signed time may be any JSON integer, past what a float holds.
    tenths = ms // 360_000
    return f"{tenths // 10}.{tenths % 10} h"


def implausible_time(
    payload: ReadingsPayload, *, received_ms: int, window: TimeWindow
) -> str | None:
    """Why ``payload``'s times are outside ``window``, or None when they are inside."""
    signed = payload.signed_ms
    if signed > received_ms + window.max_ahead_ms:
        return f"signed at {_iso(signed)}, {_hours(signed - received_ms)} after it was received"
    if signed < received_ms - window.max_age_ms:
        return f"signed at {_iso(signed)}, {_hours(received_ms - signed)} before it was received"
    if not payload.readings:
        return None
    earliest = min(r.ts_ms for r in payload.readings)
    latest = max(r.ts_ms for r in payload.readings)
    ceiling = min(signed, received_ms) + window.max_ahead_ms
    if latest > ceiling:
        return (
            f"a reading at {_iso(latest)} is {_hours(latest - min(signed, received_ms))}"
            " after the message was signed or received"
        )
    floor = max(signed, received_ms) - window.max_age_ms
    if earliest < floor:
        return (
            f"a reading at {_iso(earliest)} is {_hours(max(signed, received_ms) - earliest)}"
            " before the message was signed or received"
        )
    return None
