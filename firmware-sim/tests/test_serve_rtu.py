"""Modbus RTU over a pseudo-terminal: pymodbus's serial client, raw frames, serial timing."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU

from gridclear.devtools.metersim import MetersimProcess

Metersim = Callable[..., MetersimProcess]

SITE = """
start = "2025-06-21T10:00:00Z"
[[bus]]
name = "line"
transport = "rtu"
baud = 9600
link = "{link}"
[[bus.meter]]
unit = 1
model = "sdm630"
profile = "flat:1000"
[[bus.meter]]
unit = 2
model = "sunspec"
profile = "pv"
"""


@pytest.fixture
def line(metersim: Metersim, tmp_path: Path) -> MetersimProcess:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(link=tmp_path / "ttyMETERS"))
    return metersim(site=site)


def _client(path: str, *, timeout: float = 2.0) -> ModbusSerialClient:
    c = ModbusSerialClient(path, baudrate=9600, timeout=timeout, retries=0)
    assert c.connect()
    return c


def test_pymodbus_serial_client_reads_meters_on_the_line(
    line: MetersimProcess, tmp_path: Path
) -> None:
    assert Path(line.bus("line").link or "").resolve() == Path(line.pty).resolve()
    c = _client(str(tmp_path / "ttyMETERS"))  # through the stable link
    try:
        began = time.monotonic()
        response = c.read_input_registers(0, count=80, device_id=1)
        elapsed = time.monotonic() - began
        marker = c.read_holding_registers(40000, count=4, device_id=2)
    finally:
        c.close()
    assert not response.isError()
    values = struct.unpack(">40f", struct.pack(">80H", *response.registers))
    assert values[26] == 1000.0  # 0x0034 total power
    assert struct.pack(">HH", *marker.registers[:2]) == b"SunS"
    assert marker.registers[2:] == [1, 66]
    # 8 request bytes + 165 answer bytes at 10 bits each, 9600 baud: at least 180 ms.
    assert elapsed >= (8 + 165) * 10 / 9600


def _frame(body: bytes) -> bytes:
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def test_raw_frames_bad_crc_gets_no_answer_a_good_one_a_valid_frame(line: MetersimProcess) -> None:
    with serial.Serial(line.pty, 9600, timeout=0.5) as port:
        request = _frame(b"\x01\x04\x00\x34\x00\x02")
        port.write(request[:-1] + bytes((request[-1] ^ 0x55,)))
        assert port.read(9) == b""
        port.write(_frame(b"\x07\x04\x00\x34\x00\x02"))  # nobody at unit 7
        assert port.read(9) == b""
        port.write(_frame(b"\x00\x04\x00\x34\x00\x02"))  # broadcast: Eastron ignores it
        assert port.read(9) == b""
        port.write(request)
        answer = port.read(9)
    assert answer == _frame(b"\x01\x04\x04" + struct.pack(">f", 1000.0))


def test_bad_crc_fault_breaks_one_meter_and_the_line_keeps_working(line: MetersimProcess) -> None:
    line.fault("line/1", "bad-crc")
    c = _client(line.pty, timeout=0.5)
    try:
        with pytest.raises(ModbusIOException):
            c.read_input_registers(0x0034, count=2, device_id=1)
        assert not c.read_holding_registers(40000, count=2, device_id=2).isError()
        line.clear("line/1")
        assert not c.read_input_registers(0x0034, count=2, device_id=1).isError()
    finally:
        c.close()


def test_timeout_fault_on_the_line(line: MetersimProcess) -> None:
    line.fault("line/2", "timeout", duration_s=3600)
    c = _client(line.pty, timeout=0.5)
    try:
        with pytest.raises(ModbusIOException):
            c.read_holding_registers(40000, count=2, device_id=2)
        assert not c.read_input_registers(0x0034, count=2, device_id=1).isError()
    finally:
        c.close()
