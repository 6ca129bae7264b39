"""Register maps as data: points, tables (one per Modbus address space) and meter models.

A map says where each value lives, its wire type and unit, and which quantity
of the simulated meter fills it. It carries no behaviour beyond encoding one
value into registers, so adding a meter model is adding a module of data. Every
map is validated when it is built: overlapping points, misaligned floats or a
string that does not fit are programming errors caught at import time.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "NOT_IMPLEMENTED",
    "Encoding",
    "MeterModel",
    "Point",
    "Quantities",
    "Setting",
    "Table",
]

Quantities = Mapping[str, float | int | str]
"""A meter's values at one instant, by quantity name (see physics.Snapshot keys)."""


class Encoding(StrEnum):
    """Wire types, big-endian, most significant register first."""

    FLOAT32 = "float32"
    """IEEE-754 single precision over two registers (Eastron)."""
    UINT32 = "uint32"
    UINT16 = "uint16"
    INT16 = "int16"
    """Signed integer, scaled by the point's scale factor (SunSpec)."""
    ACC32 = "acc32"
    """Unsigned 32-bit accumulator (SunSpec); 0 means not implemented."""
    SUNSSF = "sunssf"
    """SunSpec scale factor: a signed power of ten, the value is the constant."""
    STRING = "string"
    """ASCII, two characters per register, NUL padded."""
    BITFIELD32 = "bitfield32"


_WIDTH = {
    Encoding.FLOAT32: 2,
    Encoding.UINT32: 2,
    Encoding.UINT16: 1,
    Encoding.INT16: 1,
    Encoding.ACC32: 2,
    Encoding.SUNSSF: 1,
    Encoding.BITFIELD32: 2,
}

NOT_IMPLEMENTED: Mapping[Encoding, int] = {
    Encoding.INT16: 0x8000,
    Encoding.UINT16: 0xFFFF,
    Encoding.SUNSSF: 0x8000,
    Encoding.ACC32: 0,
    Encoding.UINT32: 0xFFFFFFFF,
    Encoding.BITFIELD32: 0xFFFFFFFF,
}
"""SunSpec's "not implemented" value per type (strings: all NUL)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """A writable holding register backed by a meter setting.

    ``allowed`` lists the values the meter accepts; anything else is refused
    with exception 03 (illegal data value), as Eastron documents.
    """

    key: str
    default_quantity: str | None = None
    """Quantity giving the factory value (e.g. the unit id); else ``default``."""
    default: float = 0.0
    allowed: frozenset[float] = frozenset()


@dataclass(frozen=True, slots=True)
class Point:
    """One value in a register table.

    Exactly one of ``quantity`` (read from the meter's values at request time)
    or ``constant`` (fixed, e.g. a SunSpec model id or scale factor) is set, or
    neither for a point the meter does not implement (SunSpec "not implemented"
    value). ``scale`` is the SunSpec scale factor applied to integer types:
    the register holds ``value / 10**scale``.
    """

    address: int
    name: str
    encoding: Encoding
    unit: str = ""
    quantity: str | None = None
    constant: float | int | str | None = None
    scale: int = 0
    size: int = 0
    """Registers; only needed for strings (the others have a fixed width)."""
    setting: Setting | None = None
    description: str = ""
    width: int = field(init=False)

    def __post_init__(self) -> None:
        width = self.size if self.encoding is Encoding.STRING else _WIDTH[self.encoding]
        if width <= 0:
            raise ValueError(f"{self.name}: a string point needs size > 0")
        if self.size and self.encoding is not Encoding.STRING and self.size != width:
            raise ValueError(f"{self.name}: {self.encoding} is {width} registers, not {self.size}")
        if not 0 <= self.address <= 0xFFFF - width + 1:
            raise ValueError(f"{self.name}: address {self.address} out of 0..65535")
        if self.quantity is not None and self.constant is not None:
            raise ValueError(f"{self.name}: quantity and constant are exclusive")
        if self.setting is not None and self.quantity is not None:
            raise ValueError(f"{self.name}: a setting point has no quantity")
        object.__setattr__(self, "width", width)

    def encode(self, values: Quantities, settings: Mapping[str, float]) -> list[int]:
        """The point's registers for these meter values (``width`` of them)."""
        if self.setting is not None:
            value: float | int | str | None = settings[self.setting.key]
        elif self.quantity is not None:
            value = values.get(self.quantity)
        else:
            value = self.constant
        return _ENCODERS[self.encoding](self, value)


def _float32(point: Point, value: float | int | str | None) -> list[int]:
    number = float("nan") if value is None else float(value)
    hi, lo = struct.unpack(">HH", struct.pack(">f", number))
    return [hi, lo]


def _uint32(point: Point, value: float | int | str | None) -> list[int]:
    raw = NOT_IMPLEMENTED[point.encoding] if value is None else int(value) & 0xFFFFFFFF
    return [raw >> 16, raw & 0xFFFF]


def _acc32(point: Point, value: float | int | str | None) -> list[int]:
    if value is None:
        return [0, 0]
    # Accumulators round down: a register showing energy not yet delivered
    # would have to step back later.
    raw = math.floor(float(value) / 10.0**point.scale) & 0xFFFFFFFF
    return [raw >> 16, raw & 0xFFFF]


def _int16(point: Point, value: float | int | str | None) -> list[int]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return [NOT_IMPLEMENTED[Encoding.INT16]]
    raw = round(float(value) / 10.0**point.scale)
    raw = max(-0x7FFF, min(0x7FFF, raw))  # 0x8000 is reserved for "not implemented"
    return [raw & 0xFFFF]


def _uint16(point: Point, value: float | int | str | None) -> list[int]:
    if value is None:
        return [NOT_IMPLEMENTED[Encoding.UINT16]]
    if point.constant is not None:  # markers such as the end model id 0xFFFF
        return [int(value) & 0xFFFF]
    # A measured value never reaches 0xFFFF, which means "not implemented".
    return [max(0, min(0xFFFE, round(float(value) / 10.0**point.scale)))]


def _sunssf(point: Point, value: float | int | str | None) -> list[int]:
    if value is None:
        return [NOT_IMPLEMENTED[Encoding.SUNSSF]]
    return [int(value) & 0xFFFF]


def _string(point: Point, value: float | int | str | None) -> list[int]:
    raw = ("" if value is None else str(value)).encode("ascii", "replace")[: point.width * 2]
    raw = raw.ljust(point.width * 2, b"\0")
    return list(struct.unpack(f">{point.width}H", raw))


def _bitfield32(point: Point, value: float | int | str | None) -> list[int]:
    return _uint32(point, value)


_ENCODERS: dict[Encoding, Callable[[Point, float | int | str | None], list[int]]] = {
    Encoding.FLOAT32: _float32,
    Encoding.UINT32: _uint32,
    Encoding.UINT16: _uint16,
    Encoding.INT16: _int16,
    Encoding.ACC32: _acc32,
    Encoding.SUNSSF: _sunssf,
    Encoding.STRING: _string,
    Encoding.BITFIELD32: _bitfield32,
}


@dataclass(frozen=True, slots=True)
class Table:
    """The points of one address space (input or holding registers) of a model.

    Request rules, which differ between manufacturers:

    - ``whole_points``: a read or write must start and end on point boundaries
      (Eastron: "an attempt to read or write part of a floating point value" is
      exception 02).
    - ``max_registers``: the longest read the meter serves.
    - A read must start on a mapped point and end inside the table; registers
      in gaps between points read as 0. Anything else is exception 02.
    """

    points: tuple[Point, ...]
    max_registers: int = 125
    whole_points: bool = False
    by_address: Mapping[int, Point] = field(init=False, repr=False)
    register_owner: Mapping[int, Point] = field(init=False, repr=False)
    end: int = field(init=False)
    addresses: tuple[int, ...] = field(init=False, repr=False)
    _plans: dict[tuple[int, int], tuple[str, tuple[str | None, ...]] | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a table needs at least one point")
        ordered = tuple(sorted(self.points, key=lambda p: p.address))
        owner: dict[int, Point] = {}
        for point in ordered:
            if self.whole_points and point.address % 2 and point.width == 2:
                raise ValueError(f"{point.name}: two-register points must start on even addresses")
            for register in range(point.address, point.address + point.width):
                if register in owner:
                    raise ValueError(f"{point.name} overlaps {owner[register].name}")
                owner[register] = point
        object.__setattr__(self, "points", ordered)
        object.__setattr__(self, "by_address", {p.address: p for p in ordered})
        object.__setattr__(self, "register_owner", owner)
        object.__setattr__(self, "addresses", tuple(p.address for p in ordered))
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "end", ordered[-1].address + ordered[-1].width)

    @property
    def start(self) -> int:
        return self.points[0].address

    def covers(self, address: int, count: int) -> bool:
        """Whether a read of ``count`` registers at ``address`` is served (else exception 02)."""
        if count < 1 or count > self.max_registers:
            return False
        last = address + count
        if self.whole_points:
            if address not in self.by_address:
                return False
            tail = self.register_owner.get(last - 1)
            return tail is None or tail.address + tail.width == last
        return address in self.register_owner and last <= self.end

    def read_bytes(
        self, address: int, count: int, values: Quantities, settings: Mapping[str, float]
    ) -> bytes:
        """The registers of :meth:`read` as big-endian bytes, as they go on the wire."""
        plan = self._float_plan(address, count)
        if plan is not None:
            # Eastron blocks are all float32 quantities (gaps are 0.0, i.e. zero
            # registers): one struct call instead of one per point.
            nan = math.nan
            return struct.pack(
                plan[0], *[0.0 if q is None else values.get(q, nan) for q in plan[1]]
            )
        registers = self.read(address, count, values, settings)
        return struct.pack(f">{count}H", *registers)

    def _float_plan(self, address: int, count: int) -> tuple[str, tuple[str | None, ...]] | None:
        key = (address, count)
        plans = self._plans
        if key not in plans:
            plan: tuple[str, tuple[str | None, ...]] | None = None
            if self.whole_points and count % 2 == 0 and address % 2 == 0:
                slots: list[str | None] = []
                for slot in range(address, address + count, 2):
                    point = self.by_address.get(slot)
                    if point is None and slot in self.register_owner:
                        break
                    if point is not None and (
                        point.encoding is not Encoding.FLOAT32 or point.quantity is None
                    ):
                        break
                    slots.append(point.quantity if point is not None else None)
                else:
                    plan = (f">{count // 2}f", tuple(slots))
            if len(plans) < 4096:  # requests are few distinct shapes; bound it anyway
                plans[key] = plan
            return plan
        return plans[key]

    def read(
        self, address: int, count: int, values: Quantities, settings: Mapping[str, float]
    ) -> list[int]:
        """Registers ``address .. address+count-1``; call only when :meth:`covers` is true."""
        out = [0] * count
        last = address + count
        # Walk the points overlapping the range; a point cut at either end
        # (allowed only when whole_points is false) contributes its part.
        index = max(0, bisect.bisect_right(self.addresses, address) - 1)
        for point in self.points[index:]:
            if point.address >= last:
                break
            registers = point.encode(values, settings)
            for i, register in enumerate(registers):
                at = point.address + i
                if address <= at < last:
                    out[at - address] = register
        return out


@dataclass(frozen=True, slots=True)
class MeterModel:
    """One meter model: its tables, what it supports, and where the map comes from."""

    name: str
    title: str
    phases: int
    source: str
    input_registers: Table | None
    holding_registers: Table | None
    identity_quantity: str
    """The quantity that holds the serial as the gateway reads it."""
    functions: frozenset[int] = frozenset({0x03, 0x04, 0x08, 0x10})
    """Function codes the meter serves; any other gets exception 01."""
    manufacturer: str = "gridclear"
    model_name: str = ""

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError(f"{self.name}: phases must be 1 or 3")
        if self.input_registers is None and self.holding_registers is None:
            raise ValueError(f"{self.name}: a model needs at least one table")
