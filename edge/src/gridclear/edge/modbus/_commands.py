"""The installer's commands: ``read`` (one sample of every meter) and ``scan`` (who answers).

Both print for people by default and JSON with ``--json`` (one document on
stdout) for scripts. Exit codes: 0 all well, 1 something did not answer or
read, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from gridclear.edge.config import ConfigError, MeterConfig, load_config
from gridclear.edge.modbus._decode import float32
from gridclear.edge.modbus._pool import MeterPool, MeterStatus
from gridclear.edge.modbus._profiles import EASTRON_SERIAL, Block, Function
from gridclear.edge.modbus._sunspec import SunSpecError, discover
from gridclear.edge.modbus._transport import Bus, BusSettings, ModbusReadError
from gridclear.shared.readings import Reading

__all__ = ["parse_units", "read_command", "scan_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# A TCP-to-RTU gateway answers for a unit id with nothing behind it with one of
# these instead of staying silent: for a scan, that unit is absent.
_GATEWAY_NO_TARGET = frozenset({10, 11})


# ------------------------------------------------------------------------ read


def read_command(args: argparse.Namespace) -> int:
    """``gridclear-edge read``: one sample of every configured meter, as a table."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gridclear-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    meters = list(config.meters)
    if args.meter:
        unknown = sorted(set(args.meter) - {m.name for m in meters})
        if unknown:
            print(f"gridclear-edge: no meter named {', '.join(unknown)}", file=sys.stderr)
            return EXIT_USAGE
        meters = [m for m in meters if m.name in args.meter]
    if not meters:
        print("gridclear-edge: the configuration has no [[meters]]", file=sys.stderr)
        return EXIT_USAGE
    # Failures are in the table; the pool's log lines would only repeat them.
    logging.getLogger("gridclear.edge.modbus").setLevel(logging.ERROR)
    readings, status = asyncio.run(_read_all(meters))
    if args.json:
        _print_json([_reading_json(r, status[r.meter]) for r in readings])
    else:
        _print_read_table(readings, status, sys.stdout)
    return EXIT_OK if all(not r.quality for r in readings) else EXIT_FAILED


async def _read_all(meters: Sequence[MeterConfig]) -> tuple[list[Reading], dict[str, MeterStatus]]:
    async with MeterPool(meters) as pool:
        readings = await pool.read_once()
        return readings, dict(pool.status())


def _reading_json(reading: Reading, status: MeterStatus) -> dict[str, Any]:
    document: dict[str, Any] = reading.model_dump(mode="json")
    document["quality"] = sorted(document["quality"])
    document.update(
        address=status.address, model=status.model, serial=status.serial, error=status.last_error
    )
    return document


def _kwh(wh: int | None) -> str:
    # Exact: integer Wh shown as kWh with three decimals, never through a float.
    return "-" if wh is None else f"{wh // 1000}.{wh % 1000:03d}"


def _phases(values: tuple[float, ...] | None) -> str:
    return "-" if values is None else "/".join(f"{v:g}" for v in values)


def _print_read_table(
    readings: Sequence[Reading], status: dict[str, MeterStatus], out: TextIO
) -> None:
    header = (
        "METER",
        "ADDRESS",
        "MODEL",
        "SERIAL",
        "IMPORT kWh",
        "EXPORT kWh",
        "POWER W",
        "VOLTAGE V",
        "CURRENT A",
        "FREQ Hz",
        "STATUS",
    )
    rows = [header]
    for reading in readings:
        s = status[reading.meter]
        state = "ok" if not reading.quality else ",".join(sorted(reading.quality))
        if s.last_error and reading.quality:
            state += f": {s.last_error}"
        rows.append(
            (
                reading.meter,
                s.address,
                s.model,
                s.serial or "-",
                _kwh(reading.import_wh),
                _kwh(reading.export_wh),
                "-" if reading.power_w is None else str(reading.power_w),
                _phases(reading.voltage_v),
                _phases(reading.current_a),
                "-" if reading.frequency_hz is None else f"{reading.frequency_hz:g}",
                state,
            )
        )
    _print_table(rows, out)


def _print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    # The last column (free text) is not padded.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def _print_json(document: object) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


# ------------------------------------------------------------------------ scan


def parse_units(text: str) -> list[int]:
    """``"1-247"``, ``"1,2,5-9"`` to a sorted list of unit ids; ValueError when invalid."""
    units: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if last else low
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a unit id or a range like 1-247") from None
        if not 1 <= low <= high <= 247:
            raise ValueError(f"{part.strip()!r}: unit ids are 1 to 247")
        units.update(range(low, high + 1))
    return sorted(units)


@dataclass(frozen=True, slots=True)
class Found:
    """A unit id that answered on a bus, and what it looks like."""

    bus: str
    unit: int
    kind: str
    """``sunspec``, ``eastron`` (answers the Eastron input registers) or ``modbus``."""
    model: str | None
    """The ``model`` to put in the configuration, when it can be told."""
    serial: str | None
    detail: str


def scan_command(args: argparse.Namespace) -> int:
    """``gridclear-edge scan``: probe unit ids on each bus and say who answers and what it is."""
    try:
        units = parse_units(args.units)
        buses = _scan_buses(args)
    except (ValueError, ConfigError) as exc:
        print(f"gridclear-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    found: list[Found] = []
    for settings in buses:
        started = time.monotonic()
        if not args.json:
            print(
                f"scanning {settings.label}, units {args.units}, {args.timeout:g} s per unit ...",
                flush=True,
            )
        hits = asyncio.run(_scan_bus(settings, units, timeout_s=args.timeout))
        found.extend(hits)
        if not args.json:
            for hit in hits:
                print(
                    f"  unit {hit.unit:<3}  {hit.kind:<8} model={hit.model or '?':<8} "
                    f"serial={hit.serial or '?':<12} {hit.detail}"
                )
            elapsed = time.monotonic() - started
            print(f"  {len(hits)} answered on {settings.label} ({elapsed:.1f} s)")
    if args.json:
        _print_json(
            [
                {
                    "bus": f.bus,
                    "unit": f.unit,
                    "kind": f.kind,
                    "model": f.model,
                    "serial": f.serial,
                    "detail": f.detail,
                }
                for f in found
            ]
        )
    return EXIT_OK if found else EXIT_FAILED


def _scan_buses(args: argparse.Namespace) -> list[BusSettings]:
    if args.host or args.device:
        if args.host and args.device:
            raise ValueError("give --host or --device, not both")
        if args.host:
            return [BusSettings(kind="tcp", host=args.host, port=args.port, gap_s=args.gap or 0.0)]
        return [
            BusSettings(
                kind="rtu",
                device=args.device,
                baudrate=args.baudrate,
                parity=args.parity,
                stopbits=args.stopbits,
                gap_s=0.02 if args.gap is None else args.gap,
            )
        ]
    if args.config is None:
        raise ValueError("give --config, --host or --device")
    config = load_config(args.config)
    buses: dict[str, BusSettings] = {}
    for meter in config.meters:
        if meter.transport == "tcp":
            assert meter.host is not None
            settings = BusSettings(kind="tcp", host=meter.host, port=meter.port, gap_s=meter.gap_s)
        else:
            assert meter.device is not None
            settings = BusSettings(
                kind="rtu",
                device=meter.device,
                baudrate=meter.baudrate,
                parity=meter.parity,
                stopbits=meter.stopbits,
                gap_s=meter.gap_s,
            )
        buses.setdefault(settings.label, settings)
    if not buses:
        raise ValueError("the configuration has no [[meters]]; give --host or --device")
    return list(buses.values())


async def _scan_bus(
    settings: BusSettings, units: Sequence[int], *, timeout_s: float
) -> list[Found]:
    settings = dataclasses.replace(settings, connect_timeout_s=max(timeout_s, 1.0))
    found: list[Found] = []
    async with Bus(settings) as bus:
        for unit in units:
            hit = await _probe(bus, unit, timeout_s)
            if hit is not None:
                found.append(hit)
    return found


async def _probe(bus: Bus, unit: int, timeout_s: float) -> Found | None:
    """What answers at ``unit``, or None when nothing does (or the bus cannot be opened)."""
    label = bus.settings.label

    async def read(block: Block) -> list[int]:
        return await bus.read(block, unit=unit, timeout_s=timeout_s)

    async def read_holding(address: int, count: int) -> list[int]:
        return await read(Block(Function.HOLDING, address, count))

    answered = False
    sunspec_problem = ""
    try:
        device = await discover(read_holding)
    except ModbusReadError as exc:
        if exc.reason in ("timeout", "connection") or exc.exception_code in _GATEWAY_NO_TARGET:
            return None  # nobody there; no point asking twice
        answered = True
        sunspec_problem = f"; SunSpec walk failed: {exc}"
    except SunSpecError as exc:
        answered = True
        if "marker" not in str(exc):
            sunspec_problem = f"; SunSpec: {exc}"
    else:
        common = device.common
        models = ", ".join(str(m[0]) for m in device.models)
        try:
            meter = device.meter()
            model: str | None = "sunspec"
            detail = f"SunSpec at {device.base}, models {models}; meter model {meter.model_id}"
        except SunSpecError:
            model = None
            detail = f"SunSpec at {device.base}, models {models}; no meter model (201-204)"
        if common is not None:
            detail += f" ({common.manufacturer} {common.model} {common.version})".rstrip()
        return Found(label, unit, "sunspec", model, common.serial if common else None, detail)

    try:
        words = await read(Block(Function.INPUT, 0x0000, 2))
    except ModbusReadError as exc:
        if exc.reason == "exception" or answered:
            detail = f"answers, but not as a known meter: {exc}{sunspec_problem}"
            return Found(label, unit, "modbus", None, None, detail)
        return None
    serial: str | None = None
    try:
        high, low = await read(EASTRON_SERIAL)
        serial = str((high << 16) | low)
    except ModbusReadError:
        pass
    volts = float32(words, 0)
    shown = "?" if volts is None else f"{volts:.1f}"
    return Found(
        label,
        unit,
        "eastron",
        None,
        serial,
        f"answers Eastron input registers (L1 {shown} V); model sdm630 or sdm120",
    )
