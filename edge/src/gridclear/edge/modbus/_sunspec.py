"""SunSpec discovery: find the base address, walk the models to the end marker.

The walk reads only model headers (two registers each) and the body of common
model 1; the meter model itself is read by the poller, whole, in one request.
The read function is passed in, so the walk is the same over any transport and
is tested on plain register arrays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gridclear.edge.errors import GridclearEdgeError
from gridclear.edge.modbus._profiles import (
    COMMON_MODEL,
    METER_MODELS,
    SUNSPEC_BASES,
    SUNSPEC_END,
    SUNSPEC_MARKER,
    SunSpecCommon,
    SunSpecProfile,
    decode_common,
)
from gridclear.edge.modbus._transport import ModbusReadError

__all__ = ["ReadHolding", "SunSpecDevice", "SunSpecError", "discover"]

ReadHolding = Callable[[int, int], Awaitable[list[int]]]
"""``read(address, count)``: holding registers, or :class:`ModbusReadError`."""

# A device with more models than this, or a walk past the top of the register
# space, is broken; stop rather than loop forever over garbage.
_MAX_MODELS = 64
_GATEWAY_NO_TARGET = frozenset({10, 11})


class SunSpecError(GridclearEdgeError):
    """The device answers but is not a usable SunSpec meter. ``str()`` says why."""

    code = "not_sunspec"


@dataclass(frozen=True, slots=True)
class SunSpecDevice:
    """What discovery found."""

    base: int
    models: tuple[tuple[int, int, int], ...]
    """Every model as (ID, address of its ID register, length L)."""
    common: SunSpecCommon | None

    def meter(self) -> SunSpecProfile:
        """The first supported meter model (201-204), or :class:`SunSpecError`."""
        for model_id, address, _length in self.models:
            if model_id in METER_MODELS:
                return SunSpecProfile(model_id=model_id, address=address)
        found = ", ".join(str(m[0]) for m in self.models) or "none"
        raise SunSpecError(f"no SunSpec meter model (201-204) on the device; models: {found}")


async def find_base(read: ReadHolding) -> int | None:
    """The base address holding "SunS", or None when no candidate has it.

    A Modbus exception at a candidate (illegal address) just means "not here";
    timeouts, connection errors and a gateway's "no device behind this unit id"
    (exceptions 10 and 11) propagate, since they say nothing about the map.
    """
    for base in SUNSPEC_BASES:
        try:
            marker = await read(base, 2)
        except ModbusReadError as exc:
            if exc.reason == "exception" and exc.exception_code not in _GATEWAY_NO_TARGET:
                continue
            raise
        if tuple(marker) == SUNSPEC_MARKER:
            return base
    return None


async def discover(read: ReadHolding) -> SunSpecDevice:
    """Walk the device's SunSpec map. Raises :class:`SunSpecError` or :class:`ModbusReadError`."""
    base = await find_base(read)
    if base is None:
        raise SunSpecError(f'no "SunS" marker at any of {", ".join(map(str, SUNSPEC_BASES))}')
    models: list[tuple[int, int, int]] = []
    common: SunSpecCommon | None = None
    address = base + 2
    while True:
        if len(models) >= _MAX_MODELS:
            raise SunSpecError(f"more than {_MAX_MODELS} models without an end marker")
        if address + 2 > 0x10000:
            raise SunSpecError("model list runs past the last register without an end marker")
        model_id, length = await read(address, 2)
        if model_id == SUNSPEC_END:
            break
        if address + 2 + length > 0x10000:
            raise SunSpecError(f"model {model_id} at {address} claims {length} registers")
        models.append((model_id, address, length))
        if model_id == COMMON_MODEL and common is None:
            if length < 65:
                raise SunSpecError(f"common model at {address} is only {length} registers long")
            common = decode_common(await read(address + 2, min(length, 66)))
        address += 2 + length
    return SunSpecDevice(base=base, models=tuple(models), common=common)
