"""Request handling: the gateway's and the line's rules for absent units, broadcast and bugs."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from gridclear.metersim.device import Reply, SimulatedMeter
from gridclear.metersim.handling import (
    GATEWAY_NO_RESPONSE,
    SLAVE_DEVICE_FAILURE,
    Bus,
    handle_request,
)
from gridclear.metersim.maps import MODELS
from gridclear.metersim.physics import parse_profile
from gridclear.metersim.site import BusSpec, MeterSpec

T0 = datetime(2025, 6, 21, 10, tzinfo=UTC).timestamp()
READ_POWER = struct.pack(">BHH", 0x04, 0x0034, 2)


class _BrokenMeter(SimulatedMeter):
    """A meter with a simulator bug in it, to see that the line survives one."""

    def answer(self, pdu: bytes, t: float, *, serial_line: bool) -> Reply:
        raise ZeroDivisionError("a bug")


def _bus(*, transport: str, broken: bool = False) -> Bus:
    kind = _BrokenMeter if broken else SimulatedMeter
    meter = kind(
        model=MODELS["sdm630"],
        unit=1,
        name="line/1",
        profile=parse_profile("flat:1000"),
        profile_spec="flat:1000",
        seed=1,
        bus="line",
        start=T0,
    )
    spec = BusSpec(name="line", transport=transport, meters=(MeterSpec(1, "sdm630", "flat", "x"),))
    return Bus(spec, meters={1: meter})


def test_a_present_meter_answers_on_both_transports() -> None:
    for serial_line in (False, True):
        bus = _bus(transport="rtu" if serial_line else "tcp")
        reply = handle_request(bus, unit=1, pdu=READ_POWER, now=T0, serial_line=serial_line)
        assert reply.pdu == b"\x04\x04" + struct.pack(">f", 1000.0)
        assert not reply.behaviour.silent
        assert not bus.counters


def test_a_gateway_answers_0x0b_for_a_unit_with_no_meter() -> None:
    bus = _bus(transport="tcp")
    reply = handle_request(bus, unit=9, pdu=READ_POWER, now=T0, serial_line=False)
    assert reply.pdu == bytes((0x84, GATEWAY_NO_RESPONSE))
    assert bus.counters == {"absent_unit": 1}


@pytest.mark.parametrize(("unit", "counter"), [(9, "absent_unit"), (0, "broadcast_ignored")])
def test_a_line_stays_silent_for_absent_units_and_broadcast(unit: int, counter: str) -> None:
    bus = _bus(transport="rtu")
    reply = handle_request(bus, unit=unit, pdu=READ_POWER, now=T0, serial_line=True)
    assert reply.behaviour.silent
    assert bus.counters == {counter: 1}


def test_a_simulator_bug_is_reported_and_the_gateway_answers_slave_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = _bus(transport="tcp", broken=True)
    reply = handle_request(bus, unit=1, pdu=READ_POWER, now=T0, serial_line=False)
    assert reply.pdu == bytes((0x84, SLAVE_DEVICE_FAILURE))
    assert bus.counters == {"internal_error": 1}
    assert "internal error at line/1: ZeroDivisionError('a bug')" in capsys.readouterr().err


def test_a_simulator_bug_on_a_line_leaves_it_silent(capsys: pytest.CaptureFixture[str]) -> None:
    bus = _bus(transport="rtu", broken=True)
    reply = handle_request(bus, unit=1, pdu=READ_POWER, now=T0, serial_line=True)
    assert reply.behaviour.silent
    assert bus.counters == {"internal_error": 1}
    assert "internal error at line/1" in capsys.readouterr().err
