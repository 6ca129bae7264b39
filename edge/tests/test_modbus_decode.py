"""Decoding registers into readings, on fixed register arrays built from the published maps.

The arrays are written from the manufacturers' documents (Eastron SDM630/SDM120
protocol, SunSpec models 1 and 203), using :mod:`struct` for the encodings, so
a mistake in the decoders cannot hide behind the same mistake here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridclear.edge.modbus import _decode as d
from gridclear.edge.modbus._pool import counter_went_back, next_delay
from gridclear.edge.modbus._profiles import (
    SDM120,
    SDM630,
    Block,
    Function,
    SunSpecProfile,
    decode_common,
)
from gridclear.edge.modbus._sunspec import ReadHolding, SunSpecError, discover
from gridclear.edge.modbus._transport import ModbusReadError


def f32(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def text(value: str, registers: int) -> list[int]:
    raw = value.encode().ljust(registers * 2, b"\0")
    return list(struct.unpack(f">{registers}H", raw))


def eastron_input_registers(values: dict[int, float], size: int = 0x50) -> list[int]:
    regs = [0] * size
    for address, value in values.items():
        regs[address : address + 2] = f32(value)
    return regs


def blocks_of(profile_blocks: Sequence[Block], space: list[int]) -> list[list[int]]:
    return [space[b.address : b.address + b.count] for b in profile_blocks]


# ------------------------------------------------------------------ primitives


def test_not_implemented_markers_are_missing_values() -> None:
    assert d.int16([0x8000], 0) is None
    assert d.uint16([0xFFFF], 0) is None
    assert d.sunssf([0x8000], 0) is None
    assert d.float32([0x7FC0, 0x0000], 0) is None  # NaN
    assert d.float32([0xFFFF, 0xFFFF], 0) is None  # NaN as well
    assert d.float32(f32(float("inf")), 0) is None
    assert d.int16([0xFFFF], 0) == -1
    assert d.int16([0x7FFF], 0) == 32767


def test_acc32_is_unsigned_high_word_first() -> None:
    assert d.acc32([0x8000, 0x0001], 0) == 0x80000001
    assert d.acc32([0xFFFF, 0xFFFE], 0) == 4294967294
    assert d.acc32([0, 0], 0) == 0


def test_scale_factors() -> None:
    assert d.scaled(2305, -1) == 230.5
    assert d.scaled(5001, -2) == 50.01
    assert d.scaled(-123, 2) == -12300.0
    assert d.scaled(None, 0) is None
    assert d.scaled(1, None) is None
    assert d.sunssf([11], 0) is None  # outside -10..10: broken device
    assert d.sunssf([0xFFFE], 0) == -2


def test_words_must_be_16_bit() -> None:
    with pytest.raises(ValueError, match="not a 16-bit word"):
        d.uint16([0x10000], 0)


def test_kwh_to_wh_rounds_to_the_nearest_wh() -> None:
    assert d.kwh_to_wh(d.float32(f32(12.5), 0)) == 12500
    assert d.kwh_to_wh(d.float32(f32(0.001), 0)) == 1
    assert d.kwh_to_wh(None) is None
    assert d.kwh_to_wh(-0.5) is None
    # Around 100,000 kWh the register itself moves in steps of 7.8125 Wh.
    assert d.kwh_to_wh(d.float32(f32(100000.003), 0)) == 100000000
    assert d.kwh_to_wh(d.float32(f32(100000.005), 0)) == 100000008


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False, width=32))
def test_kwh_to_wh_never_decreases_and_stays_within_half_a_wh_of_the_register(kwh: float) -> None:
    wh = d.kwh_to_wh(kwh)
    assert wh is not None
    assert abs(wh - kwh * 1000) <= 0.5
    next_up = struct.unpack(
        ">f", struct.pack(">I", struct.unpack(">I", struct.pack(">f", kwh))[0] + 1)
    )[0]
    bigger = d.kwh_to_wh(next_up)
    assert bigger is not None
    assert bigger >= wh


# ------------------------------------------------------------------ Eastron


def test_sdm630_is_one_block_and_decodes_the_published_map() -> None:
    assert SDM630.blocks == (Block(Function.INPUT, 0x0000, 0x4C),)
    space = eastron_input_registers(
        {
            0x00: 230.1,
            0x02: 231.2,
            0x04: 229.8,  # phase 1-3 line to neutral volts
            0x06: 1.25,
            0x08: 2.5,
            0x0A: 0.75,  # phase 1-3 current
            0x34: -1499.6,  # total system power: exporting
            0x46: 50.02,  # frequency
            0x48: 4321.125,  # total import kWh
            0x4A: 87.5,  # total export kWh
        }
    )
    values = SDM630.decode(blocks_of(SDM630.blocks, space))
    assert values.import_wh == 4321125
    assert values.export_wh == 87500
    assert values.power_w == -1500
    assert values.voltage_v == (230.1, 231.2, 229.8)
    assert values.current_a == (1.25, 2.5, 0.75)
    assert values.frequency_hz == 50.02
    assert values.problems == ()


def test_sdm120_reads_two_short_blocks() -> None:
    assert SDM120.blocks == (
        Block(Function.INPUT, 0x0000, 0x0E),
        Block(Function.INPUT, 0x0046, 6),
    )
    space = eastron_input_registers(
        {0x00: 241.0, 0x06: 4.5, 0x0C: 1080.4, 0x46: 49.98, 0x48: 1.0, 0x4A: 0.0}
    )
    values = SDM120.decode(blocks_of(SDM120.blocks, space))
    assert (values.import_wh, values.export_wh, values.power_w) == (1000, 0, 1080)
    assert values.voltage_v == (241.0,)
    assert values.current_a == (4.5,)
    assert values.frequency_hz == 49.98


def test_eastron_nan_is_missing_and_a_negative_counter_is_a_problem() -> None:
    space = eastron_input_registers({0x48: -3.0, 0x4A: float("nan"), 0x02: float("nan")})
    values = SDM630.decode(blocks_of(SDM630.blocks, space))
    assert values.import_wh is None
    assert values.export_wh is None
    assert values.voltage_v is None  # one phase missing: no tuple with a hole
    assert values.problems == ("import energy register is negative (-3.0 kWh)",)


# ------------------------------------------------------------------ SunSpec


def sunspec_203(
    *,
    import_wh: int,
    export_wh: int,
    energy_sf: int = 0,
    watts: int = 0,
    w_sf: int = 0,
    volts: tuple[int, int, int] = (2301, 2302, 2303),
    v_sf: int = -1,
) -> list[int]:
    """Header and 105 registers of model 203, from the SunSpec model definition."""
    body = [0x8000] * 105
    body[0:4] = [300, 100, 100, 100]  # A, AphA, AphB, AphC
    body[4] = 0xFFFF & -2  # A_SF: 1.00 A
    body[5] = 2302  # PhV
    body[6:9] = list(volts)
    body[13] = 0xFFFF & v_sf
    body[14], body[15] = 5001, 0xFFFF & -2  # Hz, Hz_SF
    body[16] = 0xFFFF & watts
    body[20] = 0xFFFF & w_sf
    body[36:38] = [export_wh >> 16, export_wh & 0xFFFF]  # TotWhExp
    body[44:46] = [import_wh >> 16, import_wh & 0xFFFF]  # TotWhImp
    body[52] = 0xFFFF & energy_sf
    return [203, 105, *body]


def test_sunspec_203_applies_the_scale_factors_read_with_the_values() -> None:
    profile = SunSpecProfile(model_id=203, address=40069)
    assert profile.blocks == (Block(Function.HOLDING, 40069, 107),)
    values = profile.decode([sunspec_203(import_wh=0x89ABCDEF, export_wh=12, watts=-1234, w_sf=1)])
    assert values.import_wh == 0x89ABCDEF  # acc32 above 2^31 stays positive
    assert values.export_wh == 12
    assert values.power_w == -12340
    assert values.voltage_v == (230.1, 230.2, 230.3)
    assert values.current_a == (1.0, 1.0, 1.0)
    assert values.frequency_hz == 50.01
    assert values.problems == ()


def test_sunspec_energy_scale_factors() -> None:
    profile = SunSpecProfile(model_id=203, address=40069)
    kwh = profile.decode([sunspec_203(import_wh=1500, export_wh=2, energy_sf=3)])
    assert (kwh.import_wh, kwh.export_wh) == (1500000, 2000)
    tenths = profile.decode([sunspec_203(import_wh=15009, export_wh=2, energy_sf=-1)])
    assert tenths.import_wh == 1500


def test_sunspec_missing_scale_factor_means_missing_values() -> None:
    profile = SunSpecProfile(model_id=203, address=40069)
    regs = sunspec_203(import_wh=5, export_wh=5, v_sf=0)
    regs[2 + 13] = 0x8000  # V_SF not implemented
    regs[2 + 52] = 0x8000  # TotWh_SF not implemented
    values = profile.decode([regs])
    assert values.voltage_v is None
    assert values.import_wh is None
    assert values.export_wh is None
    regs[2 + 52] = 12  # out of range: a broken device, said so
    assert profile.decode([regs]).problems == ("energy scale factor 12 is out of range",)


def test_sunspec_single_phase_meter_has_one_phase() -> None:
    profile = SunSpecProfile(model_id=201, address=40069)
    regs = sunspec_203(import_wh=1, export_wh=0)
    regs[0] = 201
    values = profile.decode([regs])
    assert values.voltage_v == (230.1,)
    assert values.current_a == (1.0,)


def test_sunspec_model_moved_is_a_problem_not_garbage() -> None:
    profile = SunSpecProfile(model_id=203, address=40069)
    regs = sunspec_203(import_wh=1, export_wh=0)
    regs[0] = 101
    values = profile.decode([regs])
    assert values.import_wh is None
    assert values.problems
    assert "expected SunSpec model 203" in values.problems[0]


def sunspec_device(base: int = 40000, meter: list[int] | None = None) -> dict[int, int]:
    """A register space: "SunS", common model 1 (65 registers), a meter, the end marker."""
    common = [1, 65, *text("gridclear-test", 16), *text("M203", 16), *text("", 8)]
    common += [*text("1.2.3", 8), *text("SN-0042", 16), 7]
    layout = [0x5375, 0x6E53, *common, *(meter or sunspec_203(import_wh=1, export_wh=2))]
    layout += [0xFFFF, 0]
    return {base + i: word for i, word in enumerate(layout)}


def reader(space: dict[int, int]) -> ReadHolding:
    async def read(address: int, count: int) -> list[int]:
        if any(a not in space for a in range(address, address + count)):
            raise ModbusReadError("exception", "illegal data address", exception_code=2)
        return [space[a] for a in range(address, address + count)]

    return read


async def test_sunspec_discovery_walks_to_the_end_marker() -> None:
    device = await discover(reader(sunspec_device()))
    assert device.base == 40000
    assert device.models == ((1, 40002, 65), (203, 40069, 105))
    assert device.common is not None
    assert (device.common.manufacturer, device.common.model) == ("gridclear-test", "M203")
    assert (device.common.version, device.common.serial) == ("1.2.3", "SN-0042")
    assert device.meter() == SunSpecProfile(model_id=203, address=40069)


async def test_sunspec_discovery_tries_the_other_base_addresses() -> None:
    device = await discover(reader(sunspec_device(base=50000)))
    assert device.base == 50000
    with pytest.raises(SunSpecError, match='no "SunS" marker'):
        await discover(reader({0: 1, 1: 2}))


async def test_sunspec_device_without_meter_model_is_refused() -> None:
    inverter = [103, 50, *([0] * 50)]
    device = await discover(reader(sunspec_device(meter=inverter)))
    with pytest.raises(SunSpecError, match=r"no SunSpec meter model .*models: 1, 103"):
        device.meter()


async def test_sunspec_walk_without_end_marker_stops() -> None:
    space = sunspec_device()
    del space[max(space) - 1]  # the end marker's ID
    with pytest.raises(ModbusReadError):
        await discover(reader(space))
    looping = {40000: 0x5375, 40001: 0x6E53}
    looping.update(dict.fromkeys(range(40002, 40002 + 200), 0))  # models of length 0 forever
    with pytest.raises(SunSpecError, match="more than 64 models"):
        await discover(reader(looping))


def test_common_model_decoding() -> None:
    space = sunspec_device()
    body = [space[40004 + i] for i in range(65)]
    common = decode_common(body)
    assert common.serial == "SN-0042"


# ------------------------------------------------------------------ scheduling


def test_backoff_doubles_per_failed_sample_and_is_capped() -> None:
    assert next_delay(1.0, 0, 30.0) == 1.0
    assert [next_delay(1.0, n, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert next_delay(300.0, 5, 30.0) == 300.0  # never faster than configured
    assert next_delay(1.0, 10_000, 30.0) == 30.0


def test_a_counter_going_backwards_is_a_reset() -> None:
    assert counter_went_back(1000, 999)
    assert not counter_went_back(1000, 1000)
    assert not counter_went_back(1000, 1001)
    assert not counter_went_back(None, 5)
    assert not counter_went_back(5, None)
