"""Register words to values: pure functions, no I/O.

Modbus gives 16-bit words. The meter maps we support use big-endian words and,
for 32-bit values, the high word first (Eastron and SunSpec both do). Every
decoder returns ``None`` for the "not implemented" markers of its type, so a
value the meter does not have is never mistaken for a measurement:

- int16 and sunssf: 0x8000; uint16: 0xFFFF; float32: NaN (and infinities,
  which no meter reports for a real quantity).
- acc32 (SunSpec accumulators) are unsigned. SunSpec marks an unimplemented
  accumulator with 0, which cannot be told apart from a meter that has counted
  nothing yet; a 0 is therefore reported as 0 Wh, the reading a fresh meter gives.

pymodbus's ``convert_from_registers`` would decode the plain types, but it knows
no markers or scale factors; these few lines with :mod:`struct` keep the rules
in one place and decode a whole block without building a client.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

__all__ = [
    "NOT_IMPLEMENTED_INT16",
    "NOT_IMPLEMENTED_UINT16",
    "acc32",
    "float32",
    "int16",
    "kwh_to_wh",
    "scaled",
    "significant",
    "string",
    "sunssf",
    "uint16",
    "uint32",
]

NOT_IMPLEMENTED_INT16 = 0x8000
NOT_IMPLEMENTED_UINT16 = 0xFFFF


def _word(regs: Sequence[int], offset: int) -> int:
    word = regs[offset]
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"register value {word} at offset {offset} is not a 16-bit word")
    return word


def uint16(regs: Sequence[int], offset: int) -> int | None:
    word = _word(regs, offset)
    return None if word == NOT_IMPLEMENTED_UINT16 else word


def int16(regs: Sequence[int], offset: int) -> int | None:
    word = _word(regs, offset)
    if word == NOT_IMPLEMENTED_INT16:
        return None
    return word - 0x10000 if word & 0x8000 else word


def sunssf(regs: Sequence[int], offset: int) -> int | None:
    """A SunSpec scale factor (a power of ten), or None when missing or out of range.

    The specification allows -10..10; anything else is a broken device and is
    treated as missing rather than producing a value off by orders of magnitude.
    """
    value = int16(regs, offset)
    if value is None or not -10 <= value <= 10:
        return None
    return value


def uint32(regs: Sequence[int], offset: int) -> int:
    return (_word(regs, offset) << 16) | _word(regs, offset + 1)


def acc32(regs: Sequence[int], offset: int) -> int:
    """A SunSpec 32-bit accumulator: unsigned, high word first."""
    return uint32(regs, offset)


def float32(regs: Sequence[int], offset: int) -> float | None:
    """An IEEE 754 single, high word first; None for NaN and infinities."""
    raw = struct.pack(">HH", _word(regs, offset), _word(regs, offset + 1))
    (value,) = struct.unpack(">f", raw)
    return value if math.isfinite(value) else None


def string(regs: Sequence[int], offset: int, count: int) -> str:
    """A string of ``count`` registers, two bytes each, NUL padded (SunSpec ``string``)."""
    raw = b"".join(_word(regs, offset + i).to_bytes(2, "big") for i in range(count))
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def scaled(value: int | None, scale: int | None) -> float | None:
    """``value * 10**scale``; None when either is missing."""
    if value is None or scale is None:
        return None
    power: int = 10 ** abs(scale)
    if scale >= 0:
        return float(value * power)
    # Dividing by an exact power of ten gives the nearest double to the decimal
    # value (230.5, not 230.50000000000003 as value * 10**-1 would).
    return value / power


def significant(value: float | None, digits: int = 7) -> float | None:
    """Round to ``digits`` significant digits: what a float32 register can actually tell.

    A float32 carries about 7 significant decimal digits; printing the double it
    widens to (230.10000610351562) would claim precision the meter never had.
    """
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def kwh_to_wh(kwh: float | None) -> int | None:
    """An energy register in kWh (float32) to integer Wh, or None when unusable.

    Precision: a float32 has a 24-bit significand, so the register itself can
    only change in steps of 2^(e-23) kWh for a value in [2^e, 2^(e+1)) kWh: about
    0.06 Wh below 1,000 kWh, 1 Wh around 10,000 kWh, 8 Wh around 100,000 kWh and
    62.5 Wh around 1,000,000 kWh. That loss happens inside the meter and cannot
    be recovered here. The conversion adds no loss of its own: the float32 is
    exact as a double, multiplying by 1000 in double precision is exact to far
    below 1 Wh, and rounding to the nearest Wh is monotonic, so a register that
    never decreases never appears to decrease. For settlement this is acceptable:
    interval energy is the difference of two cumulative readings, so the error
    of an interval is at most one register step at each end and never accumulates
    over time. A household meter (well under 100,000 kWh) stays within 8 Wh per
    interval; for very large totals the meter's own resolution is the limit and
    a meter with integer registers (SunSpec acc32) should be preferred.

    Negative values cannot be cumulative energy and are refused (None).
    """
    if kwh is None or not math.isfinite(kwh) or kwh < 0:
        return None
    return round(kwh * 1000)
