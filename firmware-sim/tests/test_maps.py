"""Register maps: the published addresses, the request rules, SunSpec's layout and encodings."""

from __future__ import annotations

import struct

import pytest

from gridclear.metersim.maps import (
    MODELS,
    NOT_IMPLEMENTED,
    SDM120,
    SDM630,
    SUNSPEC_METER,
    Encoding,
    Point,
    Table,
)
from gridclear.metersim.maps.sunspec import BASE_ADDRESS


def _address_of(table: Table | None, quantity: str) -> int:
    assert table is not None
    return next(p.address for p in table.points if p.quantity == quantity)


def test_every_model_is_registered_by_its_cli_name() -> None:
    assert set(MODELS) == {"sdm630", "sdm120", "sunspec"}


@pytest.mark.parametrize(
    ("quantity", "address"),
    [
        ("v1", 0x0000),
        ("v3", 0x0004),
        ("i1", 0x0006),
        ("p1", 0x000C),
        ("p3", 0x0010),
        ("pf1", 0x001E),
        ("p", 0x0034),
        ("freq", 0x0046),
        ("import_kwh", 0x0048),
        ("export_kwh", 0x004A),
        ("v12", 0x00C8),
        ("i_n", 0x00E0),
        ("total_kwh", 0x0156),
    ],
)
def test_sdm630_input_registers_sit_at_eastrons_addresses(quantity: str, address: int) -> None:
    assert _address_of(SDM630.input_registers, quantity) == address


@pytest.mark.parametrize(
    ("quantity", "address"),
    [
        ("v1", 0x0000),
        ("i1", 0x0006),
        ("p", 0x000C),
        ("pf", 0x001E),
        ("freq", 0x0046),
        ("import_kwh", 0x0048),
        ("export_kwh", 0x004A),
        ("total_kwh", 0x0156),
    ],
)
def test_sdm120_input_registers_sit_at_eastrons_addresses(quantity: str, address: int) -> None:
    assert _address_of(SDM120.input_registers, quantity) == address


def test_eastron_settings_and_serial_are_holding_registers() -> None:
    for model in (SDM630, SDM120):
        holding = model.holding_registers
        assert holding is not None
        keys = {p.setting.key: p.address for p in holding.points if p.setting}
        assert keys["node"] == 0x0014
        assert keys["baud_code"] == 0x001C
        assert _address_of(holding, "serial") == 0xFC00


def test_eastron_reads_must_cover_whole_floats_and_at_most_40_parameters() -> None:
    table = SDM630.input_registers
    assert table is not None
    assert table.covers(0x0000, 80)
    assert table.covers(0x0048, 4)
    assert not table.covers(0x0001, 2), "starts inside a float"
    assert not table.covers(0x0000, 3), "ends inside a float"
    assert not table.covers(0x0000, 82), "more than 40 parameters"
    assert not table.covers(0x002C, 2), "starts on an unmapped address"
    assert not table.covers(0x0200, 2), "beyond the map"


def test_gaps_inside_a_block_read_as_zero() -> None:
    table = SDM630.input_registers
    assert table is not None
    values = {p.quantity: 1.0 for p in table.points if p.quantity}
    registers = table.read(0x002A, 6, values, {})
    one = list(struct.unpack(">HH", struct.pack(">f", 1.0)))
    assert registers == [*one, 0, 0, *one]  # 0x002A avg volts, 0x002C gap, 0x002E avg amps


def test_sunspec_layout_walks_from_the_marker_to_the_end_marker() -> None:
    table = SUNSPEC_METER.holding_registers
    assert table is not None
    registers = table.read(BASE_ADDRESS, table.end - BASE_ADDRESS, {}, {"node": 1.0})
    assert struct.pack(">HH", *registers[:2]) == b"SunS"
    models = []
    offset = 2
    while registers[offset] != 0xFFFF:
        model_id, length = registers[offset], registers[offset + 1]
        models.append((model_id, length))
        offset += 2 + length
    assert models == [(1, 66), (203, 105)]
    assert registers[offset + 1] == 0
    assert BASE_ADDRESS + offset + 2 == table.end


def test_sunspec_reads_any_register_range_inside_the_map_only() -> None:
    table = SUNSPEC_METER.holding_registers
    assert table is not None
    assert table.covers(40001, 3)
    assert table.covers(40000, 125)
    assert not table.covers(39999, 2)
    assert not table.covers(table.end - 1, 2)


def test_unimplemented_sunspec_points_carry_the_not_implemented_values() -> None:
    table = SUNSPEC_METER.holding_registers
    assert table is not None
    by_name = {p.name: p for p in table.points}
    assert by_name["TotVAh_SF"].encode({}, {}) == [0x8000]
    assert by_name["TotVAhImp"].encode({}, {}) == [0, 0]
    assert Point(0, "x", Encoding.INT16, quantity="p").encode({}, {}) == [
        NOT_IMPLEMENTED[Encoding.INT16]
    ]


def test_sunspec_integers_are_scaled_and_accumulators_round_down() -> None:
    current = Point(0, "A", Encoding.INT16, quantity="i", scale=-2)
    assert current.encode({"i": 12.345}, {}) == [1234]
    power = Point(0, "W", Encoding.INT16, quantity="p")
    assert power.encode({"p": -1500.4}, {}) == [(-1500) & 0xFFFF]
    energy = Point(0, "Wh", Encoding.ACC32, quantity="e")
    assert energy.encode({"e": 70_000.99}, {}) == [1, 70_000 - 65_536]


def test_a_map_with_overlapping_points_is_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        Table((Point(0, "a", Encoding.FLOAT32), Point(1, "b", Encoding.UINT16)))


def test_eastron_floats_must_start_on_even_addresses() -> None:
    with pytest.raises(ValueError, match="even"):
        Table((Point(1, "a", Encoding.FLOAT32),), whole_points=True)
