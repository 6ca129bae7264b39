"""Which samples to keep when the outbox must shrink. Pure.

Settlement needs the cumulative registers at interval boundaries; between
boundaries, high-resolution samples are a luxury. For each meter and each
boundary of the chosen step, the last sample at or before the boundary and the
first at or after it are kept (so the register can be interpolated at the
boundary), and so are the meter's first and last samples and every sample that
flags a counter reset. Everything else may go.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from gridclear.shared.intervals import boundaries
from gridclear.shared.readings import Quality, Reading

__all__ = ["THINNING_STEPS_MS", "keep_nearest_boundaries"]

THINNING_STEPS_MS = (60_000, 300_000, 900_000)
"""Coarser and coarser: one minute, five minutes, the market's 15-minute slot."""


def keep_nearest_boundaries(readings: Sequence[Reading], step_ms: int) -> list[bool]:
    """For each reading, whether it is kept at this step (see the module docstring)."""
    keep = [False] * len(readings)
    by_meter: dict[str, list[int]] = defaultdict(list)
    for index, reading in enumerate(readings):
        by_meter[reading.meter].append(index)
    for indices in by_meter.values():
        indices.sort(key=lambda i: readings[i].ts_ms)
        keep[indices[0]] = keep[indices[-1]] = True
        times = [readings[i].ts_ms for i in indices]
        position = 0
        for boundary in boundaries(times[0], times[-1], step_ms):
            while position + 1 < len(times) and times[position + 1] <= boundary:
                position += 1
            keep[indices[position]] = True  # last at or before the boundary
            if times[position] < boundary and position + 1 < len(times):
                keep[indices[position + 1]] = True  # first after it
        for i in indices:
            if Quality.COUNTER_RESET in readings[i].quality:
                keep[i] = True
    return keep
