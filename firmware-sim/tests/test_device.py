"""One meter answering PDUs: Eastron's exception rules, settings writes, SunSpec, faults."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from gridclear.metersim.device import SimulatedMeter
from gridclear.metersim.faults import Fault, FaultKind
from gridclear.metersim.maps import MODELS
from gridclear.metersim.physics import parse_profile

T0 = datetime(2025, 6, 21, 10, tzinfo=UTC).timestamp()


def meter(
    model: str = "sdm630", profile: str = "flat:3600", *, faults: list[Fault] | None = None
) -> SimulatedMeter:
    return SimulatedMeter(
        model=MODELS[model],
        unit=7,
        name="bus/7",
        profile=parse_profile(profile),
        profile_spec=profile,
        seed=1,
        bus="bus",
        start=T0,
        faults=faults,
    )


def read(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def floats(pdu: bytes) -> list[float]:
    assert pdu[0] in (3, 4), pdu
    return list(struct.unpack(f">{pdu[1] // 4}f", pdu[2:]))


def write_float(address: int, value: float) -> bytes:
    return struct.pack(">BHHBf", 0x10, address, 2, 4, value)


@pytest.mark.parametrize(
    ("request_pdu", "expected"),
    [
        (read(4, 0x0001, 2), b"\x84\x02"),  # part of a float
        (read(4, 0x0000, 82), b"\x84\x02"),  # more than 40 parameters
        (read(4, 0x002C, 2), b"\x84\x02"),  # unmapped
        (read(4, 0x1000, 2), b"\x84\x02"),  # beyond the map
        (read(4, 0x0000, 0), b"\x84\x03"),  # quantity 0
        (read(3, 0x0000, 2), b"\x83\x02"),  # holding register that does not exist
        (b"\x01\x00\x00\x00\x01", b"\x81\x01"),  # coils: not a meter function
        (b"\x06\x00\x14\x00\x05", b"\x86\x01"),  # Eastron writes with function 16 only
        (b"\x04\x00\x00", b"\x84\x03"),  # truncated request
    ],
)
def test_eastron_exception_replies(request_pdu: bytes, expected: bytes) -> None:
    assert meter().answer(request_pdu, T0, serial_line=False).pdu == expected


def test_energy_grows_with_simulated_time() -> None:
    m = meter()
    start = floats(m.answer(read(4, 0x0048, 2), T0, serial_line=False).pdu)[0]
    later = floats(m.answer(read(4, 0x0048, 2), T0 + 3600, serial_line=False).pdu)[0]
    assert later - start == pytest.approx(3.6, abs=0.002)  # 3600 W for an hour, float32 kWh


def test_the_modbus_address_setting_is_written_as_a_float_and_read_back() -> None:
    m = meter()
    assert m.answer(write_float(0x0014, 42.0), T0, serial_line=False).pdu == struct.pack(
        ">BHH", 0x10, 0x0014, 2
    )
    assert floats(m.answer(read(3, 0x0014, 2), T0, serial_line=False).pdu) == [42.0]


@pytest.mark.parametrize(
    ("pdu", "expected"),
    [
        (write_float(0x0014, 248.0), b"\x90\x03"),  # address out of 1..247
        (write_float(0x001C, 9.0), b"\x90\x03"),  # no such baud code
        (write_float(0x0014, float("nan")), b"\x90\x03"),
        (struct.pack(">BHHBH", 0x10, 0x0014, 1, 2, 0), b"\x90\x02"),  # half a float
        (write_float(0xFC00, 1.0), b"\x90\x02"),  # the serial is read-only
        (struct.pack(">BHHB", 0x10, 0x0014, 2, 4) + b"\x00", b"\x90\x03"),  # short data
    ],
)
def test_invalid_writes_are_refused_and_change_nothing(pdu: bytes, expected: bytes) -> None:
    m = meter()
    before = dict(m.settings)
    assert m.answer(pdu, T0, serial_line=False).pdu == expected
    assert m.settings == before


def test_diagnostics_echo_the_query() -> None:
    pdu = b"\x08\x00\x00\xa5\x37"
    assert meter().answer(pdu, T0, serial_line=False).pdu == pdu


def test_sunspec_device_address_is_writable_with_function_6() -> None:
    m = meter("sunspec", "pv")
    assert m.answer(b"\x06\x9c\x84\x00\x2a", T0, serial_line=False).pdu == b"\x06\x9c\x84\x00\x2a"
    assert m.answer(read(3, 40068, 1), T0, serial_line=False).pdu == b"\x03\x02\x00\x2a"
    assert m.answer(b"\x06\x9c\x84\x00\xf8", T0, serial_line=False).pdu == b"\x86\x03"
    assert m.answer(read(4, 40000, 2), T0, serial_line=False).pdu == b"\x84\x01"


def test_timeout_fault_makes_the_meter_silent_for_its_window() -> None:
    m = meter(faults=[Fault(FaultKind.TIMEOUT, after_s=60, duration_s=60)])
    assert not m.answer(read(4, 0, 2), T0 + 59, serial_line=False).behaviour.silent
    assert m.answer(read(4, 0, 2), T0 + 60, serial_line=False).behaviour.silent
    assert not m.answer(read(4, 0, 2), T0 + 120, serial_line=False).behaviour.silent


def test_exception_fault_answers_with_its_code() -> None:
    m = meter(faults=[Fault(FaultKind.EXCEPTION, code=6)])
    assert m.answer(read(4, 0, 2), T0, serial_line=False).pdu == b"\x84\x06"


def test_slow_fault_answers_correctly_but_late() -> None:
    m = meter(faults=[Fault(FaultKind.SLOW, delay_s=1.5)])
    reply = m.answer(read(4, 0x0048, 2), T0, serial_line=False)
    assert reply.behaviour.delay_s == 1.5
    assert reply.pdu[:2] == b"\x04\x04"


def test_bad_crc_acts_on_serial_lines_only() -> None:
    m = meter(faults=[Fault(FaultKind.BAD_CRC)])
    assert m.answer(read(4, 0, 2), T0, serial_line=True).behaviour.corrupt
    assert not m.answer(read(4, 0, 2), T0, serial_line=False).behaviour.corrupt


def test_reset_replaces_the_meter_new_serial_registers_from_zero() -> None:
    m = meter(faults=[Fault(FaultKind.RESET, after_s=100)])
    old_serial = m.serial
    before = floats(m.answer(read(4, 0x0048, 2), T0 + 99, serial_line=False).pdu)[0]
    after = floats(m.answer(read(4, 0x0048, 2), T0 + 110, serial_line=False).pdu)[0]
    assert before > 100.0
    assert after == pytest.approx(0.010, abs=1e-6)  # 10 s at 3600 W since the swap
    assert m.serial != old_serial
    assert m.counters["counter_resets"] == 1


def test_run_time_fault_switch_and_clear() -> None:
    m = meter()
    m.switch_fault(Fault(FaultKind.TIMEOUT), now=T0 + 10)
    assert m.answer(read(4, 0, 2), T0 + 11, serial_line=False).behaviour.silent
    m.switch_fault(None, now=T0 + 12)
    assert not m.answer(read(4, 0, 2), T0 + 13, serial_line=False).behaviour.silent
