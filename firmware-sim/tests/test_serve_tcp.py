"""The running simulator over real Modbus TCP, read with pymodbus's own client."""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from gridclear.devtools.metersim import MetersimProcess

Metersim = Callable[..., MetersimProcess]
START = "2025-06-21T10:00:00Z"


@contextmanager
def client(
    sim: MetersimProcess, *, timeout: float = 3.0, port: int | None = None
) -> Iterator[ModbusTcpClient]:
    connection = ModbusTcpClient(sim.host, port=port or sim.port, timeout=timeout, retries=0)
    assert connection.connect()
    try:
        yield connection
    finally:
        connection.close()


def floats(
    c: ModbusTcpClient, unit: int, address: int, count: int, *, function: int = 4
) -> list[float]:
    read = c.read_input_registers if function == 4 else c.read_holding_registers
    response = read(address, count=count, device_id=unit)
    assert not response.isError(), response
    return [
        float(x)
        for x in struct.unpack(f">{count // 2}f", struct.pack(f">{count}H", *response.registers))
    ]


def ulp32(value: float) -> float:
    """The gap between ``value`` and the next float32: one register resolution step."""
    return 2.0 ** (math.frexp(abs(value))[1] - 24) if value else 2.0**-149


def test_sdm630_values_at_the_published_addresses_are_plausible_and_consistent(
    metersim: Metersim,
) -> None:
    sim = metersim(meters=["1:sdm630:household+pv:5000"], seed=3, start=START)
    with client(sim) as c:
        v = floats(c, 1, 0x0000, 80)  # 0x0000..0x004F in one request: one instant
        totals = floats(c, 1, 0x0156, 2)
    volts, amps, watts, pf = v[0:3], v[3:6], v[6:9], v[15:18]
    assert all(207.0 <= x <= 253.0 for x in volts)
    assert all(a >= 0 for a in amps)
    for n in range(3):
        assert watts[n] == pytest.approx(volts[n] * amps[n] * pf[n], rel=1e-4, abs=0.01)
    assert v[26] == pytest.approx(sum(watts), rel=1e-5, abs=0.01)  # 0x0034 total power
    assert 49.9 <= v[35] <= 50.1  # 0x0046 frequency
    imported, exported = v[36], v[37]  # 0x0048, 0x004A
    assert imported > 0
    assert exported > 0
    assert totals[0] == pytest.approx(imported + exported, abs=ulp32(totals[0]))


def test_flat_2000_w_at_speed_60_grows_the_import_register_by_power_times_time(
    metersim: Metersim,
) -> None:
    sim = metersim(meters=["1:sdm630:flat:2000"], speed=60, seed=1)

    def sample(c: ModbusTcpClient) -> tuple[float, float, float, float]:
        before = time.monotonic()
        block = floats(c, 1, 0x0034, 24)  # total power .. export kWh: one instant
        return before, time.monotonic(), block[0], block[10]

    with client(sim) as c:
        b0, a0, p0, e0 = sample(c)
        time.sleep(1.0)
        b1, a1, p1, e1 = sample(c)
    assert p0 == p1 == 2000.0
    simulated_min = 60.0 * (b1 - a0)
    simulated_max = 60.0 * (a1 - b0)
    step = ulp32(e1)  # one register resolution step
    grown_wh = (e1 - e0) * 1000.0
    assert 2000.0 * simulated_min / 3600.0 - step * 1000 <= grown_wh
    assert grown_wh <= 2000.0 * simulated_max / 3600.0 + step * 1000


def test_start_at_puts_the_simulated_clock_where_an_earlier_launch_would_have_it(
    metersim: Metersim,
) -> None:
    # The simulated clock read 2030-06-21T09:00Z two wall minutes ago: at 60x it is
    # two simulated hours later now, whenever this simulator started.
    epoch = datetime(2030, 6, 21, 9, tzinfo=UTC)
    epoch_at = time.time() - 120.0
    before = time.time()
    sim = metersim(
        meters=["1:sdm630:flat:2000"],
        speed=60,
        seed=1,
        start=epoch.isoformat(),
        start_at=datetime.fromtimestamp(epoch_at, UTC).isoformat(),
    )
    after = time.time()
    launched = sim.description["start"]
    assert epoch.timestamp() + (before - epoch_at) * 60 <= launched
    assert launched <= epoch.timestamp() + (after - epoch_at) * 60


def _sunspec_walk(c: ModbusTcpClient, unit: int) -> dict[int, tuple[int, int]]:
    marker = c.read_holding_registers(40000, count=2, device_id=unit)
    assert struct.pack(">HH", *marker.registers) == b"SunS"
    models: dict[int, tuple[int, int]] = {}
    address = 40002
    while True:
        header = c.read_holding_registers(address, count=2, device_id=unit).registers
        if header[0] == 0xFFFF:
            return models
        models[header[0]] = (address, header[1])
        address += 2 + header[1]


def _int16(x: int) -> int:
    return x - 0x10000 if x & 0x8000 else x


def test_sunspec_discovery_walks_to_the_end_marker_and_decodes_model_203(
    metersim: Metersim,
) -> None:
    sim = metersim(meters=["9:sunspec:household+pv:6000"], seed=4, start=START)
    with client(sim) as c:
        models = _sunspec_walk(c, 9)
        assert list(models) == [1, 203]
        common_at, common_len = models[1]
        common = c.read_holding_registers(common_at + 2, count=common_len, device_id=9).registers
        at, length = models[203]
        assert length == 105
        # Values and their scale factors in one request, as a careful client reads them.
        body = c.read_holding_registers(at + 2, count=length, device_id=9).registers
    text = struct.pack(f">{common_len}H", *common)
    assert text[0:32].rstrip(b"\0") == b"gridclear"
    assert text[96:128].rstrip(b"\0").startswith(b"GC")
    assert common[64] == 9  # DA: the Modbus address
    a_sf, v_sf, w_sf, wh_sf = _int16(body[4]), _int16(body[13]), _int16(body[20]), _int16(body[52])
    assert (a_sf, v_sf, w_sf, wh_sf) == (-2, -1, 0, 0)
    volts = [_int16(x) * 10.0**v_sf for x in body[6:9]]
    assert all(207 <= x <= 253 for x in volts)
    watts = [_int16(x) * 10.0**w_sf for x in body[16:20]]
    assert watts[0] == pytest.approx(sum(watts[1:]), abs=2)
    exported = (body[36] << 16 | body[37]) * 10.0**wh_sf
    imported = (body[44] << 16 | body[45]) * 10.0**wh_sf
    assert imported > 0
    assert exported > 0
    assert body[69] == 0x8000
    assert body[53:61] == [0] * 8  # apparent energy: not implemented


def _snapshot(sim: MetersimProcess) -> list[list[int]]:
    with client(sim) as c:
        out = []
        for unit in (1, 2):
            out.append(c.read_input_registers(0, count=80, device_id=unit).registers)
            out.append(c.read_holding_registers(0xFC00, count=2, device_id=unit).registers)
        out.append(c.read_holding_registers(40000, count=120, device_id=3).registers)
    return out


def test_the_same_seed_gives_the_same_readings_and_another_seed_others(metersim: Metersim) -> None:
    meters = ["1:sdm630:household+ev", "2:sdm120:pv", "3:sunspec:battery+household"]
    # speed 0: the simulated clock stands at START, so whole register images compare.
    first = _snapshot(metersim(meters=meters, seed=11, speed=0, start=START))
    second = _snapshot(metersim(meters=meters, seed=11, speed=0, start=START))
    other = _snapshot(metersim(meters=meters, seed=12, speed=0, start=START))
    assert first == second
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_each_fault_acts_on_its_meter_and_leaves_the_others_alone(metersim: Metersim) -> None:
    sim = metersim(meters=["1-5:sdm630:flat:1000"], start=START)
    with client(sim) as c:
        serial_before = c.read_holding_registers(0xFC00, count=2, device_id=4).registers
    sim.fault("tcp/1", "timeout")
    sim.fault("tcp/2", "exception", code=6)
    sim.fault("tcp/3", "slow", delay_s=1.0)
    sim.fault("tcp/4", "reset")
    with client(sim, timeout=0.5) as c:
        with pytest.raises(ModbusIOException):
            c.read_input_registers(0, count=2, device_id=1)
        assert floats(c, 5, 0x0034, 2) == [1000.0]
        refused = c.read_input_registers(0, count=2, device_id=2)
        assert refused.isError()
        assert refused.exception_code == 6
        assert floats(c, 5, 0x0034, 2) == [1000.0]
        serial_after = c.read_holding_registers(0xFC00, count=2, device_id=4).registers
        assert serial_after != serial_before
        (restarted,) = floats(c, 4, 0x0048, 2)
        assert 0.0 <= restarted < 0.01  # seconds since the swap at 1 kW
    with client(sim, timeout=5.0) as c:
        began = time.monotonic()
        assert floats(c, 3, 0x0034, 2) == [1000.0]
        assert time.monotonic() - began >= 1.0
    sim.clear("tcp/1")
    with client(sim) as c:
        assert floats(c, 1, 0x0034, 2) == [1000.0]
    status = sim.status()
    assert status["meters"]["tcp/1"]["counters"]["fault_silent"] >= 1
    assert "fault_silent" not in status["meters"]["tcp/5"]["counters"]


def test_a_unit_id_without_a_meter_gets_the_gateway_exception(metersim: Metersim) -> None:
    sim = metersim(meters=["1:sdm120:pv"])
    with client(sim) as c:
        response = c.read_input_registers(0, count=2, device_id=17)
    assert response.isError()
    assert response.exception_code == 0x0B


def test_scheduled_faults_from_the_site_file(metersim: Metersim, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f"""
speed = 600
start = "{START}"
[[bus]]
name = "a"
port = 0
[[bus.meter]]
units = "1-3"
model = "sdm630"
profile = "flat:500"
[[fault]]
meter = "a/2"
kind = "exception"
code = 5
[[fault]]
meter = "a/3"
kind = "reset"
after_s = 600
"""
    )
    sim = metersim(site=site)
    with client(sim) as c:
        response = c.read_input_registers(0, count=2, device_id=2)
        assert response.isError()
        assert response.exception_code == 5
        first = c.read_holding_registers(0xFC00, count=2, device_id=3).registers
        deadline = time.monotonic() + 60
        while c.read_holding_registers(0xFC00, count=2, device_id=3).registers == first:
            assert time.monotonic() < deadline, "the scheduled reset never came"
            time.sleep(0.1)
        assert floats(c, 1, 0x0034, 2) == [500.0]


def test_garbage_on_the_socket_drops_that_connection_only(metersim: Metersim) -> None:
    sim = metersim(meters=["1:sdm630:flat:100"])
    with socket.create_connection((sim.host, sim.port), timeout=5) as raw:
        raw.sendall(b"\x00\x01\x00\x00\xff\xff" + b"junk" * 10)
        assert raw.recv(100) == b""  # closed by the simulator
    with client(sim) as c:
        assert floats(c, 1, 0x0034, 2) == [100.0]
    assert sim.status()["buses"]["tcp"]["bad_frame"] == 1
