"""Delivery intervals and the energy in them, from cumulative registers. Pure, no I/O.

Intervals are aligned to the slot length from the Unix epoch (UTC), half-open:
``[start, start + slot)``. Interval energy is the difference of the cumulative
register at the two boundaries, never a sum of power samples. A boundary that
falls between two samples gets the register value interpolated linearly between
them and rounded down to whole Wh; because each boundary has one value, the
intervals of a day add up exactly to the register's change over the day.

A register that goes backwards is a reset or a meter swap: the series is cut
there, and an interval that spans the cut is marked ``counter_reset`` and counts
only the energy measured on either side of the cut (a lower bound), never a
negative difference.

A gap between two samples longer than ``max_span_ms`` (when given) also cuts the
series, and nothing is interpolated across it: the slots inside such a gap get no
energy at all, not a guess spread over years. This is also what bounds the work: the
slots computed lie within ``max_span_ms`` of a sample, so their number grows with the
samples given, never with the time between them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SLOT_MS",
    "IntervalEnergy",
    "Sample",
    "boundaries",
    "interval_energy",
    "register_at",
    "slot_start",
    "split_at_gaps",
    "split_at_resets",
]

DEFAULT_SLOT_MS = 15 * 60 * 1000

Sample = tuple[int, int]
"""A cumulative register sample: (UTC ms, Wh)."""


def _check_slot(slot_ms: int) -> None:
    if slot_ms <= 0:
        raise ValueError(f"the slot length must be positive, not {slot_ms} ms")


def slot_start(ts_ms: int, slot_ms: int = DEFAULT_SLOT_MS) -> int:
    """The start of the interval holding ``ts_ms`` (a boundary maps to itself)."""
    _check_slot(slot_ms)
    return ts_ms - ts_ms % slot_ms


def boundaries(start_ms: int, end_ms: int, slot_ms: int = DEFAULT_SLOT_MS) -> range:
    """Every boundary ``b`` with ``start_ms <= b <= end_ms``, in order."""
    _check_slot(slot_ms)
    first = -(-start_ms // slot_ms) * slot_ms
    return range(first, end_ms + 1, slot_ms)


def split_at_resets(samples: Iterable[Sample]) -> list[list[Sample]]:
    """Sort samples by time and cut the series wherever the register goes backwards.

    Samples with the same time keep the first one. Each returned run is
    non-decreasing.
    """
    runs: list[list[Sample]] = []
    last_ts: int | None = None
    for ts, wh in sorted(samples, key=lambda s: s[0]):
        if ts == last_ts:
            continue
        last_ts = ts
        if runs and wh >= runs[-1][-1][1]:
            runs[-1].append((ts, wh))
        else:
            runs.append([(ts, wh)])
    return runs


def register_at(run: Sequence[Sample], at_ms: int) -> tuple[int, bool] | None:
    """The register value at ``at_ms`` within a non-decreasing run, and whether interpolated.

    None when ``at_ms`` lies outside the run. Interpolation rounds down, so values
    never exceed what the meter later showed and stay non-decreasing in time.
    """
    if not run or at_ms < run[0][0] or at_ms > run[-1][0]:
        return None
    times = [ts for ts, _ in run]
    i = bisect_left(times, at_ms)
    if times[i] == at_ms:
        return run[i][1], False
    (t0, v0), (t1, v1) = run[i - 1], run[i]
    return v0 + (v1 - v0) * (at_ms - t0) // (t1 - t0), True


def split_at_gaps(samples: Sequence[Sample], max_span_ms: int) -> list[list[Sample]]:
    """Time-sorted ``samples`` cut wherever two neighbours are over ``max_span_ms`` apart."""
    segments: list[list[Sample]] = []
    for sample in samples:
        if segments and sample[0] - segments[-1][-1][0] <= max_span_ms:
            segments[-1].append(sample)
        else:
            segments.append([sample])
    return segments


@dataclass(frozen=True)
class IntervalEnergy:
    start_ms: int
    end_ms: int
    wh: int
    """Energy in the interval, Wh (never negative)."""
    interpolated: bool
    """A boundary value was interpolated between samples rather than measured."""
    counter_reset: bool
    """The register was reset inside the interval: ``wh`` is what was measured around it."""


def interval_energy(
    samples: Iterable[Sample], *, slot_ms: int = DEFAULT_SLOT_MS, max_span_ms: int | None = None
) -> list[IntervalEnergy]:
    """The energy of every interval fully covered by the samples, in time order.

    An interval is covered when samples exist at or before its start and at or
    after its end (across resets too), with no gap over ``max_span_ms`` (when
    given, at least ``slot_ms``) between them.
    """
    _check_slot(slot_ms)
    ordered = sorted(samples, key=lambda s: s[0])
    if max_span_ms is None:
        return _covered(ordered, slot_ms)
    if max_span_ms < slot_ms:
        raise ValueError(f"the longest span must be at least a slot, not {max_span_ms} ms")
    # Two segments never cover the same interval: the gap between them is over a slot.
    return [iv for part in split_at_gaps(ordered, max_span_ms) for iv in _covered(part, slot_ms)]


def _covered(samples: Iterable[Sample], slot_ms: int) -> list[IntervalEnergy]:
    runs = split_at_resets(samples)
    if not runs:
        return []
    first_ts, last_ts = runs[0][0][0], runs[-1][-1][0]
    starts = [run[0][0] for run in runs]
    result = []
    for start in boundaries(first_ts, last_ts - slot_ms, slot_ms):
        end = start + slot_ms
        # The runs that overlap [start, end]: from the one holding `start` on.
        lo = max(bisect_right(starts, start) - 1, 0)
        hi = bisect_right(starts, end)
        wh = 0
        interpolated = False
        for run in runs[lo:hi]:
            a = register_at(run, max(start, run[0][0]))
            b = register_at(run, min(end, run[-1][0]))
            if a is None or b is None:
                continue
            wh += b[0] - a[0]
            interpolated = interpolated or a[1] or b[1]
        result.append(
            IntervalEnergy(
                start_ms=start,
                end_ms=end,
                wh=wh,
                interpolated=interpolated,
                counter_reset=hi - lo > 1,
            )
        )
    return result
