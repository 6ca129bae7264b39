"""Meter register maps as data, and the pure decoding of what a poll read.

Written from the manufacturers' published documents, not from any simulator:

- Eastron SDM630 Modbus Protocol (v1.x) and SDM120 Modbus Protocol: input
  registers (function 04), every value an IEEE 754 float32 across two
  registers, high word first. Energy in kWh, power in W (positive when
  importing), voltage in V, current in A, frequency in Hz. The serial number
  is holding register 0xFC00 (function 03), uint32.
- SunSpec Information Model: holding registers (function 03) from a base
  address (40000, 50000 or 0) that starts with the marker "SunS", then models
  as (ID, L, L registers) until ID 0xFFFF. Common model 1 carries the
  manufacturer, model and serial number; meter models 201 (single phase), 202
  (split phase), 203 (three phase wye) and 204 (three phase delta) share one
  layout of 105 registers: int16 values with sunssf scale factors, energies as
  acc32. Power follows the SunSpec meter convention, positive when importing.

A profile says which register blocks one sample needs (:class:`Block`) and
turns the words of those blocks into :class:`Values`. A block is read in one
request, so a SunSpec scale factor always comes from the same answer as the
values it scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from gridclear.edge.modbus import _decode as d

__all__ = [
    "COMMON_MODEL",
    "EASTRON_SERIAL",
    "METER_MODELS",
    "SDM120",
    "SDM630",
    "SUNSPEC_BASES",
    "SUNSPEC_END",
    "SUNSPEC_MARKER",
    "Block",
    "EastronProfile",
    "Function",
    "Profile",
    "SunSpecCommon",
    "SunSpecProfile",
    "Values",
    "decode_common",
]


class Function(Enum):
    """Which Modbus read function a block uses."""

    HOLDING = 3
    INPUT = 4


@dataclass(frozen=True, slots=True)
class Block:
    """A run of registers read in one request."""

    function: Function
    address: int
    count: int

    def __post_init__(self) -> None:
        # 125 is the Modbus limit for one read of registers.
        if not 1 <= self.count <= 125 or not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise ValueError(f"invalid register block {self.address}+{self.count}")


@dataclass(frozen=True, slots=True)
class Values:
    """What one sample measured. ``None``: the meter does not have it or it was unusable.

    ``problems`` lists values that were present but impossible (a negative
    cumulative register, a scale factor out of range); a sample with problems is
    flagged as a read error by the poller.
    """

    import_wh: int | None = None
    export_wh: int | None = None
    power_w: int | None = None
    voltage_v: tuple[float, ...] | None = None
    current_a: tuple[float, ...] | None = None
    frequency_hz: float | None = None
    problems: tuple[str, ...] = ()


class Profile(Protocol):
    """A meter model: the blocks one sample reads, and how to decode them."""

    @property
    def model(self) -> str: ...

    @property
    def blocks(self) -> Sequence[Block]: ...

    def decode(self, words: Sequence[Sequence[int]]) -> Values:
        """Decode the words of :attr:`blocks`, in the same order. Pure; never raises
        for any 16-bit words of the right lengths."""
        ...


def _phases(values: Sequence[float | None]) -> tuple[float, ...] | None:
    """Per-phase values as a tuple, or None when any phase is missing.

    A tuple with a hole would shift phases (L3 reported as L2), so it is all or nothing.
    """
    if not values or any(v is None for v in values):
        return None
    return tuple(v for v in values if v is not None)


# --------------------------------------------------------------------- Eastron

EASTRON_SERIAL = Block(Function.HOLDING, 0xFC00, 2)
"""Eastron SDM serial number: holding registers 0xFC00-0xFC01, uint32."""

# Eastron meters answer at most 40 float parameters (80 registers) per request.
_EASTRON_MAX_REGISTERS = 80


@dataclass(frozen=True, slots=True)
class EastronProfile:
    """An Eastron SDM meter: float32 input registers at fixed addresses.

    ``max_gap`` is how many unused registers a block may span to save a request;
    reading across a gap only costs bytes on the wire (2 per register), while
    every extra request costs a full turnaround on a shared RS-485 bus.
    """

    model: str
    voltage: tuple[int, ...]
    current: tuple[int, ...]
    power: int
    frequency: int
    import_kwh: int
    export_kwh: int
    max_gap: int
    blocks: tuple[Block, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", self._plan())

    def _addresses(self) -> list[int]:
        return sorted(
            {
                *self.voltage,
                *self.current,
                self.power,
                self.frequency,
                self.import_kwh,
                self.export_kwh,
            }
        )

    def _plan(self) -> tuple[Block, ...]:
        blocks: list[Block] = []
        start = end = -1
        for address in self._addresses():
            if (
                start >= 0
                and address - end <= self.max_gap
                and (address + 2 - start <= _EASTRON_MAX_REGISTERS)
            ):
                end = address + 2
                continue
            if start >= 0:
                blocks.append(Block(Function.INPUT, start, end - start))
            start, end = address, address + 2
        blocks.append(Block(Function.INPUT, start, end - start))
        return tuple(blocks)

    def _float(self, words: Sequence[Sequence[int]], address: int) -> float | None:
        for block, regs in zip(self.blocks, words, strict=True):
            if block.address <= address < block.address + block.count:
                return d.float32(regs, address - block.address)
        raise AssertionError(f"register {address:#06x} is in no block")  # pragma: no cover

    def decode(self, words: Sequence[Sequence[int]]) -> Values:
        problems: list[str] = []
        energies: list[int | None] = []
        for label, address in (("import", self.import_kwh), ("export", self.export_kwh)):
            kwh = self._float(words, address)
            if kwh is not None and kwh < 0:
                problems.append(f"{label} energy register is negative ({kwh} kWh)")
            energies.append(d.kwh_to_wh(kwh))
        power = self._float(words, self.power)
        return Values(
            import_wh=energies[0],
            export_wh=energies[1],
            power_w=None if power is None else round(power),
            voltage_v=_phases([d.significant(self._float(words, a)) for a in self.voltage]),
            current_a=_phases([d.significant(self._float(words, a)) for a in self.current]),
            frequency_hz=d.significant(self._float(words, self.frequency)),
            problems=tuple(problems),
        )


SDM630 = EastronProfile(
    model="sdm630",
    voltage=(0x0000, 0x0002, 0x0004),  # phase 1-3 line to neutral volts
    current=(0x0006, 0x0008, 0x000A),  # phase 1-3 current
    power=0x0034,  # total system power
    frequency=0x0046,
    import_kwh=0x0048,  # total import kWh
    export_kwh=0x004A,  # total export kWh
    max_gap=40,  # one request: 0x0000-0x004B
)
SDM120 = EastronProfile(
    model="sdm120",
    voltage=(0x0000,),
    current=(0x0006,),
    power=0x000C,  # active power
    frequency=0x0046,
    import_kwh=0x0048,
    export_kwh=0x004A,
    # The SDM120 documents only a sparse map; keep to short gaps between the
    # documented registers: two requests, 0x0000-0x000D and 0x0046-0x004B.
    max_gap=4,
)


# --------------------------------------------------------------------- SunSpec

SUNSPEC_MARKER = (0x5375, 0x6E53)
"""The words "SunS" at the base address."""
SUNSPEC_BASES = (40000, 50000, 0)
"""Base addresses the SunSpec specification allows, in the order devices most often use."""
SUNSPEC_END = 0xFFFF
"""The model ID that ends the list of models."""
COMMON_MODEL = 1
METER_MODELS = {201: 1, 202: 2, 203: 3, 204: 3}
"""SunSpec integer meter models and their number of phases."""
_METER_LENGTH = 105

# Offsets of points in the 20x meter models, counted from the first register
# after the (ID, L) header.
_A_PH = (1, 2, 3)
_A_SF = 4
_V_PH = (6, 7, 8)
_V_SF = 13
_HZ, _HZ_SF = 14, 15
_W, _W_SF = 16, 20
_TOT_WH_EXP, _TOT_WH_IMP, _TOT_WH_SF = 36, 44, 52


@dataclass(frozen=True, slots=True)
class SunSpecCommon:
    """What common model 1 says about the device."""

    manufacturer: str
    model: str
    version: str
    serial: str


def decode_common(body: Sequence[int]) -> SunSpecCommon:
    """Decode the body of common model 1 (the 65 or 66 registers after its header)."""
    if len(body) < 64:
        raise ValueError(f"common model is {len(body)} registers long, expected at least 65")
    return SunSpecCommon(
        manufacturer=d.string(body, 0, 16),
        model=d.string(body, 16, 16),
        version=d.string(body, 40, 8),
        serial=d.string(body, 48, 16),
    )


@dataclass(frozen=True, slots=True)
class SunSpecProfile:
    """A SunSpec meter model (201-204) found at ``address`` (its ID register).

    The one block covers the header too: a device that restarted with another
    layout is noticed (the ID no longer matches) instead of decoded as garbage.
    """

    model_id: int
    address: int
    blocks: tuple[Block, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.model_id not in METER_MODELS:
            raise ValueError(f"SunSpec model {self.model_id} is not a supported meter model")
        block = Block(Function.HOLDING, self.address, 2 + _METER_LENGTH)
        object.__setattr__(self, "blocks", (block,))

    @property
    def model(self) -> str:
        return f"sunspec-{self.model_id}"

    def decode(self, words: Sequence[Sequence[int]]) -> Values:
        (regs,) = words
        if regs[0] != self.model_id or regs[1] < _METER_LENGTH:
            return Values(
                problems=(
                    f"expected SunSpec model {self.model_id} at {self.address}, "
                    f"found model {regs[0]} of length {regs[1]}",
                )
            )
        body = regs[2:]
        problems: list[str] = []
        phases = METER_MODELS[self.model_id]

        energy_sf = d.sunssf(body, _TOT_WH_SF)
        energies: list[int | None] = []
        for offset in (_TOT_WH_IMP, _TOT_WH_EXP):
            raw = d.acc32(body, offset)
            if energy_sf is None:
                energies.append(None)
            elif energy_sf >= 0:
                energies.append(raw * 10**energy_sf)
            else:
                # Integer Wh only: a sub-Wh scale is truncated toward zero, which
                # keeps the register monotonic.
                energies.append(raw // 10**-energy_sf)
        if energy_sf is None and d.int16(body, _TOT_WH_SF) is not None:
            problems.append(f"energy scale factor {d.int16(body, _TOT_WH_SF)} is out of range")

        power = d.scaled(d.int16(body, _W), d.sunssf(body, _W_SF))
        v_sf = d.sunssf(body, _V_SF)
        a_sf = d.sunssf(body, _A_SF)
        return Values(
            import_wh=energies[0],
            export_wh=energies[1],
            power_w=None if power is None else round(power),
            voltage_v=_phases([d.scaled(d.int16(body, o), v_sf) for o in _V_PH[:phases]]),
            current_a=_phases([d.scaled(d.int16(body, o), a_sf) for o in _A_PH[:phases]]),
            frequency_hz=d.scaled(d.int16(body, _HZ), d.sunssf(body, _HZ_SF)),
            problems=tuple(problems),
        )


EASTRON_PROFILES: dict[str, EastronProfile] = {"sdm630": SDM630, "sdm120": SDM120}
