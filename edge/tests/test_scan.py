"""``gridclear-edge scan``: who answers on a bus, run as the installed command."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from pathlib import Path

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gridclear.devtools.net import free_port
from gridclear.edge.modbus._commands import parse_units

COMMAND = str(Path(sys.executable).with_name("gridclear-edge"))
BITS = [SimData(0, count=16, values=False, datatype=DataType.BITS)]


def text(value: str, registers: int) -> list[int]:
    return list(struct.unpack(f">{registers}H", value.encode().ljust(registers * 2, b"\0")))


def sunspec_meter(unit: int) -> SimDevice:
    """A SunSpec device: "SunS" at 40000, common model 1, meter model 203, end marker."""
    common = [1, 65, *text("Acme", 16), *text("AM-3", 16), *text("", 8), *text("2.0", 8)]
    common += [*text("SN-77", 16), unit]
    words = [0x5375, 0x6E53, *common, 203, 105, *([0] * 105), 0xFFFF, 0]
    holding = [SimData(40000, values=words, datatype=DataType.REGISTERS)]
    return SimDevice(
        id=unit,
        simdata=(BITS, BITS, holding, [SimData(0, values=[0], datatype=DataType.REGISTERS)]),
    )


def eastron_meter(unit: int) -> SimDevice:
    volts = list(struct.unpack(">HH", struct.pack(">f", 230.0)))
    inputs = [SimData(0, values=[*volts, *([0] * 0x4A)], datatype=DataType.REGISTERS)]
    serial = [SimData(0xFC00, values=[1, 2], datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=(BITS, BITS, serial, inputs))


async def run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_scan_finds_sunspec_and_eastron_units_on_a_tcp_gateway() -> None:
    port = free_port()
    server = ModbusTcpServer([sunspec_meter(3), eastron_meter(5)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        code, out, err = await run(
            "scan", "--host", "127.0.0.1", "--port", str(port), "--units", "3,5", "--json"
        )
        text_code, text_out, _ = await run(
            "scan", "--host", "127.0.0.1", "--port", str(port), "--units", "3"
        )
    finally:
        await server.shutdown()
    assert code == 0, err
    sunspec, eastron = json.loads(out)
    assert (sunspec["unit"], sunspec["kind"], sunspec["model"]) == (3, "sunspec", "sunspec")
    assert sunspec["serial"] == "SN-77"
    assert "models 1, 203; meter model 203" in sunspec["detail"]
    assert (eastron["unit"], eastron["kind"], eastron["serial"]) == (5, "eastron", str(65536 + 2))
    assert "L1 230.0 V" in eastron["detail"]
    assert text_code == 0
    assert "unit 3" in text_out
    assert "1 answered on tcp://127.0.0.1:" in text_out


async def test_scan_of_an_empty_bus_finds_nothing() -> None:
    code, out, _ = await run(
        "scan", "--host", "127.0.0.1", "--port", str(free_port()), "--units", "1-2", "--json"
    )
    assert code == 1
    assert json.loads(out) == []


async def test_scan_refuses_bad_arguments() -> None:
    code, _, err = await run("scan", "--host", "h", "--units", "0-300")
    assert code == 2
    assert "unit ids are 1 to 247" in err
    code, _, err = await run("scan")
    assert code == 2
    assert "give --config, --host or --device" in err


def test_unit_ranges() -> None:
    assert parse_units("1-3,7,5-5") == [1, 2, 3, 5, 7]
    assert parse_units("1-247") == list(range(1, 248))
