"""``gridclear-edge read``: the installer's first check, run as the installed command."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from pathlib import Path

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gridclear.devtools.net import free_port

COMMAND = str(Path(sys.executable).with_name("gridclear-edge"))


def f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def sdm630(unit: int) -> SimDevice:
    """An SDM630 per Eastron's published input register map (float32, high word first)."""
    regs = [0] * 0x4C
    for address, value in {0x00: 230.0, 0x02: 231.0, 0x04: 232.0, 0x34: 2500.0, 0x46: 50.0}.items():
        regs[address : address + 2] = f32(value)
    regs[0x48:0x4A] = f32(1234.5)
    regs[0x4A:0x4C] = f32(6.25)
    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    serial = [SimData(0xFC00, values=[0, 4242], datatype=DataType.REGISTERS)]
    return SimDevice(
        id=unit,
        simdata=(bits, bits, serial, [SimData(0, values=regs, datatype=DataType.REGISTERS)]),
    )


def write_config(path: Path, port: int, dead_port: int) -> Path:
    path.write_text(
        f"""
device_id = "gw-1"
key_file = "device.key"
outbox = "outbox.db"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[meters]]
name = "house"
transport = "tcp"
host = "127.0.0.1"
port = {port}
unit = 1
model = "sdm630"
[[meters]]
name = "garage"
transport = "tcp"
host = "127.0.0.1"
port = {dead_port}
unit = 1
model = "sdm120"
timeout_s = 0.3
retries = 0
"""
    )
    return path


async def run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_read_prints_one_line_per_meter_and_fails_when_one_is_dead(tmp_path: Path) -> None:
    port = free_port()
    server = ModbusTcpServer([sdm630(1)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        config = write_config(tmp_path / "edge.toml", port, free_port())
        code, out, err = await run("read", "--config", str(config))
        json_code, json_out, _ = await run("read", "--config", str(config), "--json")
        only_code, only_out, _ = await run("read", "--config", str(config), "--meter", "house")
    finally:
        await server.shutdown()

    assert code == 1, err
    header, house, garage = out.splitlines()
    assert header.split()[:4] == ["METER", "ADDRESS", "MODEL", "SERIAL"]
    assert house.split() == [
        "house",
        f"tcp://127.0.0.1:{port}#1",
        "sdm630",
        "4242",
        "1234.500",
        "6.250",
        "2500",
        "230/231/232",
        "0/0/0",
        "50",
        "ok",
    ]
    assert garage.startswith("garage")
    assert "read_error: " in garage
    assert "cannot connect" in garage

    assert json_code == 1
    house_doc, garage_doc = json.loads(json_out)
    assert house_doc["import_wh"] == 1234500
    assert house_doc["export_wh"] == 6250
    assert house_doc["quality"] == []
    assert house_doc["serial"] == "4242"
    assert garage_doc["quality"] == ["read_error"]
    assert garage_doc["import_wh"] is None

    assert only_code == 0
    assert len(only_out.splitlines()) == 2


async def test_read_with_a_bad_config_says_which_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", 502, 503)
    config.write_text(config.read_text().replace("unit = 1", "unit = 0", 1))
    code, out, err = await run("read", "--config", str(config))
    assert code == 2
    assert out == ""
    assert err.strip() == f"gridclear-edge: {config}: meters[0].unit: must be between 1 and 247"
    assert "Traceback" not in err
