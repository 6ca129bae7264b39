"""MeterPool over real Modbus: TCP sockets and an RTU line on a pseudo-terminal pair.

The meters here are pymodbus's own server (SimDevice) loaded with registers
written from the manufacturers' published maps, with hooks to inject faults
(late answers, exceptions, silence) and to change values between polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gridclear.devtools.net import free_port
from gridclear.edge.config import MeterConfig
from gridclear.edge.modbus import MeterPool
from gridclear.shared.readings import Quality, Reading


def f32(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def eastron_map(
    *,
    volts: tuple[float, ...],
    amps: tuple[float, ...],
    watts: float,
    import_kwh: float,
    export_kwh: float,
    power_at: int = 0x34,
) -> dict[int, int]:
    """Input registers of an Eastron SDM meter, per the published protocol (others read 0)."""
    regs: dict[int, int] = dict.fromkeys(range(0x50), 0)

    def put(address: int, value: float) -> None:
        regs[address], regs[address + 1] = f32(value)

    for i, v in enumerate(volts):
        put(0x00 + 2 * i, v)
    for i, a in enumerate(amps):
        put(0x06 + 2 * i, a)
    put(power_at, watts)
    put(0x46, 50.0)
    put(0x48, import_kwh)
    put(0x4A, export_kwh)
    return regs


def text(value: str, registers: int) -> list[int]:
    return list(struct.unpack(f">{registers}H", value.encode().ljust(registers * 2, b"\0")))


def sunspec_map(*, import_wh: int, export_wh: int, watts: int) -> dict[int, int]:
    """Holding registers of a SunSpec meter: "SunS", model 1, model 203, end marker."""
    common = [1, 65, *text("Acme", 16), *text("AM-3", 16), *text("", 8), *text("2.0", 8)]
    common += [*text("SN-77", 16), 1]
    body = [0x8000] * 105
    body[1:5] = [12, 13, 14, 0xFFFF & -1]  # AphA..C, A_SF: 1.2, 1.3, 1.4 A
    body[6:9] = [2301, 2302, 2303]
    body[13] = 0xFFFF & -1  # V_SF
    body[14], body[15] = 4999, 0xFFFF & -2  # Hz
    body[16], body[20] = 0xFFFF & watts, 0  # W, W_SF
    body[36:38] = [export_wh >> 16, export_wh & 0xFFFF]
    body[44:46] = [import_wh >> 16, import_wh & 0xFFFF]
    body[52] = 0  # TotWh_SF
    words = [0x5375, 0x6E53, *common, 203, 105, *body, 0xFFFF, 0]
    return {40000 + i: w for i, w in enumerate(words)}


@dataclass
class FakeMeter:
    """One Modbus device; change ``input``/``holding`` or the fault knobs at any time."""

    unit: int
    input: dict[int, int] = field(default_factory=dict)
    holding: dict[int, int] = field(default_factory=dict)
    delay_s: float = 0.0
    exceptions: list[int] = field(default_factory=list)
    requests: int = 0

    def device(self) -> SimDevice:
        def space(regs: dict[int, int]) -> list[SimData]:
            if not regs:
                return [SimData(0, values=[0], datatype=DataType.REGISTERS)]
            return [
                SimData(a, values=[w], datatype=DataType.REGISTERS) for a, w in sorted(regs.items())
            ]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit,
            simdata=(bits, bits, space(self.holding), space(self.input)),
            action=self._action,
        )

    async def _action(
        self, function: int, start: int, address: int, count: int, registers: list[int], values: Any
    ) -> ExcCodes | None:
        self.requests += 1
        if self.exceptions:
            return ExcCodes(self.exceptions.pop(0))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        live = self.holding if function == 3 else self.input
        for a in range(address, address + count):
            if a in live:
                registers[a - start] = live[a]
        return None


@contextlib.asynccontextmanager
async def tcp_server(*meters: FakeMeter) -> AsyncIterator[int]:
    port = free_port()
    server = ModbusTcpServer([m.device() for m in meters], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield port
    finally:
        await server.shutdown()


@contextlib.asynccontextmanager
async def pty_line() -> AsyncIterator[tuple[str, str]]:
    """Two serial device paths joined like the two ends of an RS-485 line.

    Two pseudo-terminal pairs with their master sides copied into each other (what
    ``socat pty pty`` does), so both the meter and the gateway open a real tty.
    """
    pairs = [os.openpty(), os.openpty()]
    for _master, follower in pairs:
        tty.setraw(follower)
    loop = asyncio.get_running_loop()

    def pump(source: int, target: int) -> Callable[[], None]:
        def forward() -> None:
            with contextlib.suppress(OSError):
                os.write(target, os.read(source, 4096))

        return forward

    (m1, f1), (m2, f2) = pairs
    loop.add_reader(m1, pump(m1, m2))
    loop.add_reader(m2, pump(m2, m1))
    try:
        yield os.ttyname(f1), os.ttyname(f2)
    finally:
        loop.remove_reader(m1)
        loop.remove_reader(m2)
        for fd in (m1, f1, m2, f2):
            os.close(fd)


def tcp_meter(name: str, port: int, unit: int = 1, **extra: Any) -> MeterConfig:
    fields: dict[str, Any] = {"model": "sdm630", "timeout_s": 0.5, **extra}
    return MeterConfig(name=name, transport="tcp", host="127.0.0.1", port=port, unit=unit, **fields)


SDM630_VALUES = eastron_map(
    volts=(230.1, 231.2, 229.8),
    amps=(1.25, 2.5, 0.75),
    watts=1234.4,
    import_kwh=4321.125,
    export_kwh=87.5,
)

SERIAL = {0xFC00: 0x0012, 0xFC01: 0xD687}  # Eastron serial number register: 1234567


async def test_reads_an_sdm630_over_tcp_as_published() -> None:
    meter = FakeMeter(1, input=SDM630_VALUES, holding=SERIAL)
    async with tcp_server(meter) as port, MeterPool([tcp_meter("m1", port)]) as pool:
        (reading,) = await pool.read_once()
        status = pool.status()["m1"]
    assert reading.meter == "m1"
    assert reading.quality == frozenset()
    assert (reading.import_wh, reading.export_wh, reading.power_w) == (4321125, 87500, 1234)
    assert reading.voltage_v == (230.1, 231.2, 229.8)
    assert reading.current_a == (1.25, 2.5, 0.75)
    assert reading.frequency_hz == 50.0
    assert status.serial == "1234567"
    assert status.last_success_ms == reading.ts_ms
    assert status.consecutive_errors == 0
    assert meter.requests == 2  # one block for the values, one for the serial number


async def test_discovers_and_reads_a_sunspec_meter_over_tcp() -> None:
    meter = FakeMeter(3, holding=sunspec_map(import_wh=3_000_000_000, export_wh=42, watts=-800))
    async with (
        tcp_server(meter) as port,
        MeterPool([tcp_meter("pv", port, unit=3, model="sunspec")]) as pool,
    ):
        (first,) = await pool.read_once()
        requests_after_discovery = meter.requests
        (second,) = await pool.read_once()
        status = pool.status()["pv"]
    for reading in (first, second):
        assert reading.quality == frozenset()
        assert (reading.import_wh, reading.export_wh, reading.power_w) == (3_000_000_000, 42, -800)
        assert reading.voltage_v == (230.1, 230.2, 230.3)
        assert reading.current_a == (1.2, 1.3, 1.4)
        assert reading.frequency_hz == 49.99
    assert (status.model, status.serial) == ("sunspec-203", "SN-77")
    assert meter.requests == requests_after_discovery + 1  # values and scale factors: one request


async def test_a_cumulative_register_going_backwards_is_flagged_once() -> None:
    meter = FakeMeter(1, input=dict(SDM630_VALUES))
    async with tcp_server(meter) as port, MeterPool([tcp_meter("m1", port)]) as pool:
        (before,) = await pool.read_once()
        meter.input.update(dict(zip((0x48, 0x49), f32(12.0), strict=True)))  # meter swapped
        (swapped,) = await pool.read_once()
        (after,) = await pool.read_once()
        status = pool.status()["m1"]
    assert before.quality == frozenset()
    assert swapped.import_wh == 12000
    assert swapped.quality == {Quality.COUNTER_RESET}
    assert after.quality == frozenset()  # the new value is the baseline
    assert status.counter_resets == 1


async def test_a_busy_answer_is_retried_a_wrong_address_is_not() -> None:
    meter = FakeMeter(1, input=SDM630_VALUES, holding=SERIAL, exceptions=[ExcCodes.DEVICE_BUSY])
    async with tcp_server(meter) as port, MeterPool([tcp_meter("m1", port)]) as pool:
        (reading,) = await pool.read_once()
        assert reading.quality == frozenset()
        assert pool.status()["m1"].errors == {"exception": 1}

        meter.exceptions[:] = [ExcCodes.ILLEGAL_ADDRESS]
        requests = meter.requests
        (failed,) = await pool.read_once()
        status = pool.status()["m1"]
    assert failed.quality == {Quality.READ_ERROR}
    assert failed.import_wh is None
    assert meter.requests == requests + 1
    assert status.consecutive_errors == 1
    assert status.last_error is not None
    assert "exception 2 (illegal data address)" in status.last_error


async def test_a_dead_or_silent_meter_does_not_delay_the_others() -> None:
    live = FakeMeter(1, input=SDM630_VALUES)
    silent = FakeMeter(1, input=SDM630_VALUES, delay_s=3600)  # accepts, never answers
    seen: list[Reading] = []
    enough = asyncio.Event()

    def sink(reading: Reading) -> None:
        seen.append(reading)
        if (
            sum(r.meter == "silent" for r in seen) >= 2
            and sum(r.meter == "gone" for r in seen) >= 2
        ):
            enough.set()

    async with tcp_server(live) as live_port, tcp_server(silent) as silent_port:
        meters = [
            tcp_meter("live", live_port, poll_interval_s=0.05),
            tcp_meter("silent", silent_port, poll_interval_s=0.05, timeout_s=0.5),
            tcp_meter("gone", free_port(), poll_interval_s=0.05, timeout_s=0.5),
        ]
        async with MeterPool(meters, max_backoff_s=1.0) as pool:
            runner = asyncio.create_task(pool.run(sink))
            async with asyncio.timeout(60):
                await enough.wait()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            status = pool.status()

    silent_at = [i for i, r in enumerate(seen) if r.meter == "silent"]
    live_between = [r for r in seen[silent_at[0] : silent_at[1]] if r.meter == "live"]
    # The silent meter's first sample took three timeouts and two pauses (about
    # 1.8 s): the live meter, polled every 0.05 s, kept delivering meanwhile.
    assert len([r for r in seen[: silent_at[0]] if r.meter == "live"]) >= 5
    assert len(live_between) >= 5
    assert all(r.quality == frozenset() for r in seen if r.meter == "live")
    assert all(r.quality == {Quality.READ_ERROR} for r in seen if r.meter != "live")
    assert status["silent"].errors["timeout"] >= 3
    assert status["gone"].errors["connection"] >= 3
    assert status["live"].consecutive_errors == 0


async def test_rtu_line_on_a_pty_with_two_meters_and_an_empty_address() -> None:
    three_phase = FakeMeter(1, input=SDM630_VALUES)
    single = FakeMeter(
        2,
        input=eastron_map(
            volts=(241.0,), amps=(4.5,), watts=1080.4, import_kwh=1.0, export_kwh=0.0, power_at=0x0C
        ),
    )
    async with pty_line() as (meter_side, gateway_side):
        server = ModbusSerialServer(
            [three_phase.device(), single.device()],
            port=meter_side,
            baudrate=19200,
            ignore_missing_devices=True,
        )
        await server.serve_forever(background=True)
        line: dict[str, Any] = {
            "transport": "rtu",
            "device": gateway_side,
            "baudrate": 19200,
            "timeout_s": 0.3,
        }
        meters = [
            MeterConfig(name="l1", unit=1, model="sdm630", **line),
            MeterConfig(name="l2", unit=2, model="sdm120", **line),
            MeterConfig(name="nobody", unit=7, model="sdm120", **line),
        ]
        try:
            async with MeterPool(meters) as pool:
                first = await pool.read_once()
                second = await pool.read_once()
                status = pool.status()
        finally:
            await server.shutdown()
    for readings in (first, second):
        by_name = {r.meter: r for r in readings}
        assert by_name["l1"].quality == frozenset()
        assert by_name["l1"].import_wh == 4321125
        assert by_name["l1"].voltage_v == (230.1, 231.2, 229.8)
        assert by_name["l2"].quality == frozenset()
        assert (by_name["l2"].import_wh, by_name["l2"].power_w) == (1000, 1080)
        assert by_name["l2"].voltage_v == (241.0,)
        assert by_name["nobody"].quality == {Quality.READ_ERROR}
    # pymodbus's serial server answers "device failure" for a unit it does not
    # have, where a real line stays silent; either way the sample is flagged.
    assert sum(status["nobody"].errors.values()) >= 2
    assert status["l1"].address == f"rtu:{gateway_side}#1"


async def test_pool_must_be_entered() -> None:
    pool = MeterPool([tcp_meter("m1", 1502)])
    with pytest.raises(RuntimeError, match="async with"):
        await pool.read_once()
