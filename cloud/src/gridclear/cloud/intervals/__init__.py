"""Interval energy per meter and delivery slot: pure computation and its upkeep in SQL.

:func:`slot_energy` turns cumulative register samples into the energy of each
slot (shared arithmetic: :mod:`gridclear.shared.intervals`), with a completeness
flag; :func:`refresh_intervals` recomputes the slots that new (or late) samples
touched, as queued by the ingest writer in ``interval_dirty``.
"""

from gridclear.cloud.intervals.compute import (
    DEFAULT_MAX_GAP_MS,
    DEFAULT_MAX_SPAN_MS,
    RegisterSample,
    SlotEnergy,
    affected_slots,
    slot_energy,
)
from gridclear.cloud.intervals.maintain import (
    DEFAULT_REFRESH_SLOTS,
    RefreshResult,
    refresh_intervals,
)

__all__ = [
    "DEFAULT_MAX_GAP_MS",
    "DEFAULT_MAX_SPAN_MS",
    "DEFAULT_REFRESH_SLOTS",
    "RefreshResult",
    "RegisterSample",
    "SlotEnergy",
    "affected_slots",
    "refresh_intervals",
    "slot_energy",
]
