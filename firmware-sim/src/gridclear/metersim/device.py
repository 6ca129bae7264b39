"""One simulated meter: its register map, physics, settings and faults, answering Modbus PDUs.

:meth:`SimulatedMeter.answer` is the whole device as a pure step: a request
PDU and a simulated time in, a response PDU out (or a decision to stay silent,
to answer late, or to corrupt the frame, which the transport carries out).
Register values are computed at the request's simulated time from the physics,
never stored, so a read always sees the meter as it is at that instant.

Request validation follows the manufacturer's document for each model (see
docs/METERS.md): unsupported function -> exception 01; a read outside the map,
or of part of an Eastron float -> 02; a malformed request or an invalid
written value -> 03.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass

from gridclear.metersim import __version__
from gridclear.metersim.faults import ANSWER, Behaviour, Fault, FaultPlan
from gridclear.metersim.maps import Encoding, MeterModel, Point, Table
from gridclear.metersim.physics import (
    Battery,
    Composite,
    ElectricalModel,
    Flat,
    Integrator,
    Location,
    Profile,
    Pv,
    Snapshot,
    meter_key,
    noise,
)

__all__ = [
    "ILLEGAL_ADDRESS",
    "ILLEGAL_FUNCTION",
    "ILLEGAL_VALUE",
    "Reply",
    "SimulatedMeter",
    "exception_pdu",
]

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03


@dataclass(frozen=True, slots=True)
class Reply:
    """A meter's reaction to one request: a PDU to send (after ``behaviour``'s delay),
    or nothing when ``behaviour.silent``."""

    pdu: bytes
    behaviour: Behaviour = ANSWER


def exception_pdu(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


def _can_export(profile: Profile) -> bool:
    if isinstance(profile, Composite):
        return any(_can_export(part) for part in profile.parts)
    if isinstance(profile, Flat):
        return profile.watts < 0
    return isinstance(profile, Pv | Battery)


class SimulatedMeter:
    """A meter on a bus: unit id, model, profile, seeded identity and energy, faults."""

    def __init__(
        self,
        *,
        model: MeterModel,
        unit: int,
        name: str,
        profile: Profile,
        profile_spec: str,
        seed: int,
        bus: str,
        start: float,
        location: Location | None = None,
        faults: list[Fault] | None = None,
    ) -> None:
        self.model = model
        self.unit = unit
        self.name = name
        self.profile_spec = profile_spec
        self._key = meter_key(seed, bus, unit)
        site_key = meter_key(seed, "site")
        # Meters arrive already in service: seeded, plausible register readings.
        import_wh = float(round(1000.0 * (100.0 + 9900.0 * noise(self._key, 60, 0))))
        export_wh = (
            float(round(1000.0 * (50.0 + 4950.0 * noise(self._key, 61, 0))))
            if _can_export(profile)
            else 0.0
        )
        self.integrator = Integrator(
            profile=profile,
            key=self._key,
            site_key=site_key,
            t=start,
            import_wh=import_wh,
            export_wh=export_wh,
        )
        self.electrical = ElectricalModel(
            phases=model.phases, profile=profile, key=self._key, site_key=site_key
        )
        self.faults = FaultPlan(start=start, scheduled=list(faults or []))
        self.generation = 0
        self.counters: Counter[str] = Counter()
        self.settings: dict[str, float] = {}
        for table in (model.input_registers, model.holding_registers):
            for point in table.points if table else ():
                if point.setting is not None:
                    setting = point.setting
                    self.settings[setting.key] = (
                        float(unit) if setting.default_quantity == "unit" else setting.default
                    )

    @property
    def serial(self) -> int:
        """The serial number; a replaced meter (counter reset) has a new one."""
        return 10_000_000 + int(89_999_999 * noise(self._key, 62, self.generation))

    @property
    def serial_text(self) -> str:
        return f"GC{self.serial:08d}"

    def _apply_due_events(self, t: float) -> None:
        for at in self.faults.due_resets(t):
            self.integrator.reset(at)
            self.generation += 1
            self.counters["counter_resets"] += 1

    def values(self, t: float) -> Snapshot:
        """Every quantity the maps can ask for, at simulated time ``t``."""
        self._apply_due_events(t)
        import_wh, export_wh = self.integrator.energy(t)
        snapshot = self.electrical.snapshot(
            t=t, power_w=self.integrator.power(t), import_wh=import_wh, export_wh=export_wh
        )
        snapshot.update(
            serial=self.serial,
            serial_text=self.serial_text,
            unit=self.unit,
            manufacturer=self.model.manufacturer,
            model_name=self.model.model_name,
            options="simulated",
            version=__version__,
        )
        return snapshot

    def switch_fault(self, fault: Fault | None, *, now: float) -> None:
        """Switch a run-time fault on (or off with ``None``) at simulated time ``now``."""
        self.faults.switch(fault, now=now)
        self._apply_due_events(now)

    def answer(self, pdu: bytes, t: float, *, serial_line: bool) -> Reply:
        """The meter's reply to one request PDU at simulated time ``t``."""
        self.counters["requests"] += 1
        self._apply_due_events(t)
        behaviour = self.faults.behaviour(t, serial_line=serial_line)
        if behaviour.silent:
            self.counters["fault_silent"] += 1
            return Reply(b"", behaviour)
        if not pdu:
            self.counters["malformed"] += 1
            return Reply(b"", Behaviour(silent=True))
        function = pdu[0]
        if behaviour.exception is not None:
            self.counters["fault_exception"] += 1
            return Reply(exception_pdu(function, behaviour.exception), behaviour)
        response = self._serve(function, pdu, t)
        if response[0] & 0x80:
            self.counters[f"exception_{response[1]:02x}"] += 1
        return Reply(response, behaviour)

    def _serve(self, function: int, pdu: bytes, t: float) -> bytes:
        if function not in self.model.functions:
            return exception_pdu(function, ILLEGAL_FUNCTION)
        if function in (0x03, 0x04):
            return self._read(function, pdu, t)
        if function == 0x10:
            return self._write_multiple(pdu, t)
        if function == 0x06:
            return self._write_single(pdu, t)
        # 0x08 diagnostics: only sub-function 0 (return query data) is served.
        if len(pdu) >= 3 and pdu[1:3] == b"\x00\x00":
            return pdu
        return exception_pdu(function, ILLEGAL_FUNCTION)

    def _read(self, function: int, pdu: bytes, t: float) -> bytes:
        if len(pdu) != 5:
            return exception_pdu(function, ILLEGAL_VALUE)
        address, count = struct.unpack_from(">HH", pdu, 1)
        if not 1 <= count <= 125:
            return exception_pdu(function, ILLEGAL_VALUE)
        table = self.model.input_registers if function == 0x04 else self.model.holding_registers
        if table is None or not table.covers(address, count):
            return exception_pdu(function, ILLEGAL_ADDRESS)
        data = table.read_bytes(address, count, self.values(t), self.settings)
        return bytes((function, 2 * count)) + data

    def _write_multiple(self, pdu: bytes, t: float) -> bytes:
        if len(pdu) < 6:
            return exception_pdu(0x10, ILLEGAL_VALUE)
        address, count, size = struct.unpack_from(">HHB", pdu, 1)
        if not 1 <= count <= 123 or size != 2 * count or len(pdu) != 6 + size:
            return exception_pdu(0x10, ILLEGAL_VALUE)
        registers = list(struct.unpack_from(f">{count}H", pdu, 6))
        error = self._store(address, registers)
        if error is not None:
            return exception_pdu(0x10, error)
        return struct.pack(">BHH", 0x10, address, count)

    def _write_single(self, pdu: bytes, t: float) -> bytes:
        if len(pdu) != 5:
            return exception_pdu(0x06, ILLEGAL_VALUE)
        address, value = struct.unpack_from(">HH", pdu, 1)
        error = self._store(address, [value])
        if error is not None:
            return exception_pdu(0x06, error)
        return pdu

    def _store(self, address: int, registers: list[int]) -> int | None:
        """Validate and store a write of whole writable points; nothing is stored on error."""
        table: Table | None = self.model.holding_registers
        if table is None:
            return ILLEGAL_ADDRESS
        updates: dict[str, float] = {}
        cursor = address
        end = address + len(registers)
        while cursor < end:
            point: Point | None = table.by_address.get(cursor)
            if point is None or point.setting is None or cursor + point.width > end:
                return ILLEGAL_ADDRESS
            words = registers[cursor - address : cursor - address + point.width]
            value = _decode(point, words)
            if value is None or value not in point.setting.allowed:
                return ILLEGAL_VALUE
            updates[point.setting.key] = value
            cursor += point.width
        self.settings.update(updates)
        self.counters["writes"] += 1
        return None


def _decode(point: Point, words: list[int]) -> float | None:
    if point.encoding is Encoding.FLOAT32:
        (value,) = struct.unpack(">f", struct.pack(">HH", *words))
        return value if math.isfinite(value) else None
    if point.encoding is Encoding.UINT16:
        return float(words[0])
    return None
