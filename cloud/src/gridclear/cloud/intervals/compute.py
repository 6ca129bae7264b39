"""Energy per slot from the cumulative import and export registers. Pure, no I/O.

For each register the arithmetic is :func:`gridclear.shared.intervals.interval_energy`:
the difference of the register at the slot's two boundaries, interpolated linearly
between the samples around a boundary, never across a reset (a register that goes
backwards cuts the series; the slot holding the cut counts only what was measured
on either side and is flagged ``counter_reset``).

A slot is **complete** when, for every register the meter reports, both boundaries
lie within the samples, no reset happened inside it, and each boundary is measured
or interpolated between samples at most ``max_gap_ms`` apart. Interpolating over a
long gap (a gateway that was off) gives a number, but not one to settle on without
saying so. Interpolating over a gap longer than ``max_span_ms`` gives nothing at
all: the slots inside it are not computed (a sample dated decades away from the
others must not make a refresh walk every slot in between).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from gridclear.shared.intervals import DEFAULT_SLOT_MS, Sample, interval_energy, slot_start

__all__ = [
    "DEFAULT_MAX_GAP_MS",
    "DEFAULT_MAX_SPAN_MS",
    "RegisterSample",
    "SlotEnergy",
    "affected_slots",
    "slot_energy",
]

DEFAULT_MAX_GAP_MS = 5 * 60 * 1000
"""Longest gap between the two samples around a boundary for a slot to be complete."""

DEFAULT_MAX_SPAN_MS = 31 * 24 * 3600 * 1000
"""Longest gap between two samples that slots are interpolated over (incomplete) at all.

A gateway that was off for weeks and lost its outbox still gets its gap spread over
the slots, flagged; a sample decades away from the others gets none.
"""


@dataclass(frozen=True)
class RegisterSample:
    """One sample: time (UTC ms) and the two cumulative registers (Wh, None if unread)."""

    ts_ms: int
    import_wh: int | None
    export_wh: int | None


@dataclass(frozen=True)
class SlotEnergy:
    start_ms: int
    end_ms: int
    import_wh: int | None
    export_wh: int | None
    complete: bool
    interpolated: bool
    counter_reset: bool


def _bracket_gap(times: Sequence[int], at_ms: int) -> int | None:
    """Distance between the samples around ``at_ms`` (0 when one is at it); None outside."""
    i = bisect_left(times, at_ms)
    if i < len(times) and times[i] == at_ms:
        return 0
    if i == 0 or i == len(times):
        return None
    return times[i] - times[i - 1]


def slot_energy(
    samples: Sequence[RegisterSample],
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    max_span_ms: int = DEFAULT_MAX_SPAN_MS,
) -> list[SlotEnergy]:
    """Every slot covered by the samples of at least one register, in time order.

    Covered means within a stretch of samples no two of which are over
    ``max_span_ms`` apart, so the result has at most ``max_span_ms / slot_ms + 1``
    slots per sample, whatever their times.
    """
    series: dict[str, list[Sample]] = {"import": [], "export": []}
    for s in samples:
        if s.import_wh is not None:
            series["import"].append((s.ts_ms, s.import_wh))
        if s.export_wh is not None:
            series["export"].append((s.ts_ms, s.export_wh))
    present = {name: values for name, values in series.items() if values}
    per_register = {
        name: {
            iv.start_ms: iv
            for iv in interval_energy(values, slot_ms=slot_ms, max_span_ms=max_span_ms)
        }
        for name, values in present.items()
    }
    times = {name: sorted({ts for ts, _ in values}) for name, values in present.items()}
    starts = sorted({start for slots in per_register.values() for start in slots})
    result = []
    for start in starts:
        end = start + slot_ms
        found = {name: slots.get(start) for name, slots in per_register.items()}
        complete = all(iv is not None for iv in found.values())
        interpolated = counter_reset = False
        for name, iv in found.items():
            if iv is None:
                continue
            interpolated = interpolated or iv.interpolated
            counter_reset = counter_reset or iv.counter_reset
            for boundary in (start, end):
                gap = _bracket_gap(times[name], boundary)
                if gap is None or gap > max_gap_ms:
                    complete = False
        imp, exp = found.get("import"), found.get("export")
        result.append(
            SlotEnergy(
                start_ms=start,
                end_ms=end,
                import_wh=imp.wh if imp is not None else None,
                export_wh=exp.wh if exp is not None else None,
                complete=complete and not counter_reset,
                interpolated=interpolated,
                counter_reset=counter_reset,
            )
        )
    return result


def affected_slots(
    before_ms: int, after_ms: int, *, slot_ms: int = DEFAULT_SLOT_MS
) -> tuple[int, int]:
    """The first and last slot start whose energy new samples can change.

    ``before_ms`` is the stored sample just before the new ones (or the first new
    one), ``after_ms`` the stored sample just after them (or the last new one).
    Boundaries between those two samples can move; a slot changes when one of its
    two boundaries does.
    """
    # The slot before the one holding `before_ms` too: its end boundary may be at
    # `before_ms` itself, and being one slot generous costs one recomputed slot.
    return slot_start(before_ms, slot_ms) - slot_ms, slot_start(after_ms, slot_ms)
