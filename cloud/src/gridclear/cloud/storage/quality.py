"""How a reading's quality flags are stored: one bit each in ``readings.quality``.

A bit set is what lets a bucket of many samples say which flags any of them
carried (``bit_or``) in one aggregate; the API turns bits back into the flag
names of the wire protocol.
"""

from __future__ import annotations

from collections.abc import Iterable

from gridclear.shared.readings import Quality

__all__ = ["QUALITY_BITS", "quality_bits", "quality_flags"]

QUALITY_BITS: dict[Quality, int] = {
    Quality.ESTIMATED: 1,
    Quality.COUNTER_RESET: 2,
    Quality.READ_ERROR: 4,
    Quality.CLOCK_UNSYNCED: 8,
}
"""Never renumber: stored rows keep their bits."""


def quality_bits(flags: Iterable[Quality]) -> int:
    bits = 0
    for flag in flags:
        bits |= QUALITY_BITS.get(flag, 0)
    return bits


def quality_flags(bits: int) -> list[Quality]:
    """The flags set in ``bits``, in the protocol's order."""
    return [flag for flag, bit in QUALITY_BITS.items() if bits & bit]
