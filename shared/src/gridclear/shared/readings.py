"""One meter sample, as the gateway read it: the unit every message carries a batch of.

Energy is integer Wh (the cumulative registers, the basis of settlement), power
integer W (positive imports, negative exports), time UTC milliseconds since the
epoch. Instantaneous electrical values that are never summed into money
(voltage, current, frequency) may be floats, and are finite: NaN and infinity are
not JSON, the encoder refuses to write them, and a reading that carries them is
refused on read too. A value the meter does not have, or that could not be read,
is ``None``; why is said by the quality flags.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Quality", "Reading"]


class Quality(StrEnum):
    """Why a reading should not be taken at face value."""

    ESTIMATED = "estimated"
    """Values were not measured but filled in (interpolated, carried forward)."""
    COUNTER_RESET = "counter_reset"
    """A cumulative register went backwards: a meter swap or reset. Never diff across it."""
    READ_ERROR = "read_error"
    """Some or all registers could not be read (timeout, exception, bad frame)."""
    CLOCK_UNSYNCED = "clock_unsynced"
    """The gateway's clock was not synchronised when the sample was taken."""


class Reading(BaseModel):
    """One sample of one meter."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    meter: str = Field(min_length=1, max_length=64)
    """The meter's identity as the gateway sees it: its serial number when readable."""
    ts_ms: int = Field(ge=0)
    """Sample time, UTC milliseconds since the Unix epoch."""
    import_wh: int | None = Field(default=None, ge=0)
    """Cumulative imported energy register, Wh."""
    export_wh: int | None = Field(default=None, ge=0)
    """Cumulative exported energy register, Wh."""
    power_w: int | None = None
    """Total active power, W: positive when importing, negative when exporting."""
    voltage_v: tuple[float, ...] | None = Field(default=None, min_length=1, max_length=3)
    """Per-phase voltage (line to neutral), V."""
    current_a: tuple[float, ...] | None = Field(default=None, min_length=1, max_length=3)
    """Per-phase current, A."""
    frequency_hz: float | None = None
    """Grid frequency, Hz."""
    quality: frozenset[Quality] = frozenset()
    """Quality flags; empty for a complete, trusted sample."""
