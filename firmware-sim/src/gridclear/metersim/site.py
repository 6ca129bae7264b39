"""What to simulate: a site's buses, meters, profiles and faults, from a TOML file or CLI flags.

Everything here is validated data. Each problem raises :class:`ConfigError`
with a message naming the file position and a stable ``reason``; nothing is
started from a configuration that has any error. The file format is
documented with an example in ``firmware-sim/examples/site.toml``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridclear.metersim.errors import ConfigError
from gridclear.metersim.faults import Fault, FaultKind, parse_fault
from gridclear.metersim.maps import MODELS
from gridclear.metersim.physics import Location, parse_profile

__all__ = [
    "BAUD_RATES",
    "BusSpec",
    "FaultSpec",
    "MeterSpec",
    "SiteSpec",
    "load_site",
    "parse_meter_arg",
    "parse_site",
    "parse_start",
    "site_from_args",
]

BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_UNITS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True, slots=True)
class MeterSpec:
    unit: int
    model: str
    profile: str
    name: str


@dataclass(frozen=True, slots=True)
class BusSpec:
    """One Modbus line: a TCP gateway (host, port) or an RTU line on a pseudo-terminal."""

    name: str
    transport: str
    meters: tuple[MeterSpec, ...]
    host: str = "127.0.0.1"
    port: int = 502
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    link: Path | None = None
    turnaround_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class FaultSpec:
    meter: str
    fault: Fault


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A whole simulated site; ``start`` is the simulated epoch seconds at launch.

    With ``start_at`` (wall-clock epoch seconds), ``start`` is the simulated time at
    that wall-clock instant instead, so that processes started at different moments
    share one simulated clock.
    """

    buses: tuple[BusSpec, ...]
    seed: int = 0
    speed: float = 1.0
    start: float | None = None
    start_at: float | None = None
    location: Location = field(default_factory=Location)
    faults: tuple[FaultSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.start_at is not None and self.start is None:
            raise ConfigError(
                "--start-at needs --start: the simulated time at that instant",
                reason="bad_value",
            )

    @property
    def meter_count(self) -> int:
        return sum(len(bus.meters) for bus in self.buses)


def _check_unit(unit: int, where: str) -> int:
    if not 1 <= unit <= 247:
        raise ConfigError(
            f"{where}: unit id {unit} is out of range; Modbus unit ids are 1 to 247",
            reason="bad_unit",
        )
    return unit


def _units(text: str, where: str) -> list[int]:
    match = _UNITS.match(text)
    if match is None:
        raise ConfigError(
            f"{where}: unit {text!r} is not a number or a range like 1-20", reason="bad_unit"
        )
    first = _check_unit(int(match.group(1)), where)
    last = _check_unit(int(match.group(2) or first), where)
    if last < first:
        raise ConfigError(f"{where}: unit range {text!r} runs backwards", reason="bad_unit")
    return list(range(first, last + 1))


def _check_model(model: str, where: str) -> str:
    name = model.strip().lower()
    if name not in MODELS:
        known = ", ".join(MODELS)
        raise ConfigError(
            f"{where}: unknown meter model {model!r} (known: {known})", reason="unknown_model"
        )
    return name


def _check_profile(profile: str, where: str) -> str:
    try:
        parse_profile(profile)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}", reason=error.reason) from None
    return profile.strip()


def parse_meter_arg(text: str, *, bus: str = "tcp") -> list[MeterSpec]:
    """Meters from ``UNIT:MODEL:PROFILE`` (UNIT may be a range ``1-20``)."""
    where = f"--meter {text!r}"
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise ConfigError(
            f"{where}: expected UNIT:MODEL:PROFILE, e.g. 1:sdm630:household", reason="bad_meter"
        )
    units = _units(parts[0], where)
    model = _check_model(parts[1], where)
    profile = _check_profile(parts[2], where)
    return [MeterSpec(unit, model, profile, f"{bus}/{unit}") for unit in units]


def parse_start(text: str) -> float:
    """Simulated start time from ISO 8601 (``2025-06-21T06:00:00Z``); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"start {text!r} is not an ISO 8601 time like 2025-06-21T06:00:00Z",
            reason="bad_value",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _check_speed(speed: float) -> float:
    if not math.isfinite(speed) or not 0 <= speed <= 1_000_000:
        raise ConfigError(
            f"speed must be between 0 (clock stands still) and 1000000, not {speed}",
            reason="bad_value",
        )
    return speed


def _check_buses(buses: Sequence[BusSpec]) -> None:
    names: set[str] = set()
    meter_names: set[str] = set()
    endpoints: set[tuple[str, int]] = set()
    for bus in buses:
        if bus.name in names:
            raise ConfigError(f"bus name {bus.name!r} is used twice", reason="duplicate_bus")
        names.add(bus.name)
        if bus.transport == "tcp" and bus.port:
            if (bus.host, bus.port) in endpoints:
                raise ConfigError(
                    f"bus {bus.name!r}: {bus.host}:{bus.port} is used by another bus",
                    reason="duplicate_port",
                )
            endpoints.add((bus.host, bus.port))
        units: set[int] = set()
        for meter in bus.meters:
            if meter.unit in units:
                raise ConfigError(
                    f"bus {bus.name!r}: unit id {meter.unit} is used twice on one line",
                    reason="duplicate_unit",
                )
            units.add(meter.unit)
            if meter.name in meter_names:
                raise ConfigError(
                    f"meter name {meter.name!r} is used twice", reason="duplicate_meter"
                )
            meter_names.add(meter.name)


def site_from_args(
    *,
    host: str,
    port: int,
    meters: Sequence[str],
    speed: float,
    seed: int,
    start: str | None,
    start_at: str | None = None,
) -> SiteSpec:
    """A one-bus site from the ``serve --meter`` flags."""
    if not meters:
        raise ConfigError(
            "give at least one --meter UNIT:MODEL:PROFILE, or --site FILE", reason="bad_meter"
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is out of range 0..65535", reason="bad_value")
    specs = [spec for text in meters for spec in parse_meter_arg(text)]
    bus = BusSpec(name="tcp", transport="tcp", host=host, port=port, meters=tuple(specs))
    _check_buses([bus])
    return SiteSpec(
        buses=(bus,),
        seed=seed,
        speed=_check_speed(speed),
        start=parse_start(start) if start else None,
        start_at=parse_start(start_at) if start_at else None,
    )


class _Table:
    """A TOML table being validated: typed getters that name the position in errors."""

    def __init__(self, data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        self.data = data
        self.where = where
        unknown = sorted(set(data) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed))
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)} (known: {known})",
                reason="bad_site_file",
            )

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(
            f"{self.where}.{key}: expected {expected}, got {self.data[key]!r}",
            reason="bad_site_file",
        )

    def text(self, key: str, default: str | None = None) -> str:
        if key not in self.data:
            if default is None:
                raise ConfigError(f"{self.where}: {key} is required", reason="bad_site_file")
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string")
        return value.strip()

    def integer(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "a number")
        return float(value)

    def tables(self, key: str) -> list[Mapping[str, Any]]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(key, f"an array of tables ([[{key}]])")
        return value


def _serial_settings(table: _Table) -> tuple[int, str, int, float]:
    where = table.where
    baud = table.integer("baud", 9600)
    if baud not in BAUD_RATES:
        raise ConfigError(
            f"{where}: baud {baud} is not one of {BAUD_RATES}", reason="bad_site_file"
        )
    parity = table.text("parity", "N").upper()
    if parity not in ("N", "E", "O"):
        raise ConfigError(f"{where}: parity must be N, E or O", reason="bad_site_file")
    stopbits = table.integer("stopbits", 1)
    if stopbits not in (1, 2):
        raise ConfigError(f"{where}: stopbits must be 1 or 2", reason="bad_site_file")
    turnaround = table.number("turnaround_ms", 5.0)
    if not 0 <= turnaround <= 10_000:
        raise ConfigError(f"{where}: turnaround_ms must be 0..10000", reason="bad_site_file")
    return baud, parity, stopbits, turnaround


def _bus_from(data: Mapping[str, Any], index: int) -> BusSpec:
    where = f"bus[{index}]"
    table = _Table(
        data,
        where,
        {
            "name",
            "transport",
            "host",
            "port",
            "baud",
            "parity",
            "stopbits",
            "link",
            "turnaround_ms",
            "meter",
        },
    )
    name = table.text("name", f"bus{index}")
    where = f"bus {name!r}"
    table.where = where
    transport = table.text("transport", "tcp").lower()
    if transport not in ("tcp", "rtu"):
        raise ConfigError(
            f"{where}: transport must be 'tcp' or 'rtu', not {transport!r}", reason="bad_site_file"
        )
    port = table.integer("port", 502)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is out of range 0..65535", reason="bad_site_file")
    baud, parity, stopbits, turnaround = _serial_settings(table)
    link = Path(table.text("link")) if "link" in data else None
    meters: list[MeterSpec] = []
    for m_index, entry in enumerate(table.tables("meter")):
        m_where = f"{where} meter[{m_index}]"
        meter = _Table(entry, m_where, {"unit", "units", "model", "profile", "name"})
        if ("unit" in entry) == ("units" in entry):
            raise ConfigError(
                f'{m_where}: give either unit = N or units = "A-B"', reason="bad_site_file"
            )
        if "unit" in entry:
            units = [_check_unit(meter.integer("unit", 0), m_where)]
        else:
            units = _units(meter.text("units"), m_where)
        model = _check_model(meter.text("model"), m_where)
        profile = _check_profile(meter.text("profile"), m_where)
        if "name" in entry and len(units) > 1:
            raise ConfigError(
                f"{m_where}: a name is for one unit, not a range", reason="bad_site_file"
            )
        for unit in units:
            meters.append(MeterSpec(unit, model, profile, meter.text("name", f"{name}/{unit}")))
    if not meters:
        raise ConfigError(f"{where}: no meters ([[bus.meter]] tables)", reason="bad_site_file")
    return BusSpec(
        name=name,
        transport=transport,
        meters=tuple(meters),
        host=table.text("host", "127.0.0.1"),
        port=port,
        baud=baud,
        parity=parity,
        stopbits=stopbits,
        link=link,
        turnaround_ms=turnaround,
    )


def parse_site(data: Mapping[str, Any], *, source: str = "site file") -> SiteSpec:
    """A site from parsed TOML data (see :func:`load_site`)."""
    try:
        return _parse_site(data)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}", reason=error.reason) from None


def _parse_site(data: Mapping[str, Any]) -> SiteSpec:
    top = _Table(data, "site", {"seed", "speed", "start", "latitude", "longitude", "bus", "fault"})
    latitude = top.number("latitude", Location().latitude)
    longitude = top.number("longitude", Location().longitude)
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise ConfigError(
            "site: latitude must be -90..90 and longitude -180..180", reason="bad_site_file"
        )
    location = Location(latitude=latitude, longitude=longitude)
    buses = [_bus_from(entry, i) for i, entry in enumerate(top.tables("bus"))]
    if not buses:
        raise ConfigError("site: no buses ([[bus]] tables)", reason="bad_site_file")
    _check_buses(buses)
    by_name = {m.name: (bus, m) for bus in buses for m in bus.meters}
    faults: list[FaultSpec] = []
    for index, entry in enumerate(top.tables("fault")):
        where = f"fault[{index}]"
        meter_name = _Table(
            entry, where, {"meter", "kind", "code", "delay_s", "after_s", "duration_s"}
        ).text("meter")
        if meter_name not in by_name:
            raise ConfigError(f"{where}: no meter named {meter_name!r}", reason="bad_fault")
        fault = parse_fault(entry, where=where)
        if fault.kind is FaultKind.BAD_CRC and by_name[meter_name][0].transport != "rtu":
            raise ConfigError(
                f"{where}: bad-crc needs an RTU line (Modbus TCP has no CRC)", reason="bad_fault"
            )
        faults.append(FaultSpec(meter_name, fault))
    start = top.text("start", "") if "start" in data else ""
    return SiteSpec(
        buses=tuple(buses),
        seed=top.integer("seed", 0),
        speed=_check_speed(top.number("speed", 1.0)),
        start=parse_start(start) if start else None,
        location=location,
        faults=tuple(faults),
    )


def load_site(path: Path) -> SiteSpec:
    """Read and validate a site file. Raises :class:`ConfigError` (reason ``bad_site_file``…)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"cannot read site file {path}: {error.strerror}", reason="bad_site_file"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"{path}: not a valid TOML file: {error}", reason="bad_site_file"
        ) from None
    return parse_site(data, source=str(path))
