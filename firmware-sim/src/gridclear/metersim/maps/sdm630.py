"""Eastron SDM630 (three-phase, four-wire): the Modbus map as Eastron publishes it.

Source: Eastron SDM630 Modbus Smart Meter, Modbus Protocol Implementation
(v1.x, "SDM630-Modbus MID V2" user manual, part 3). Input registers are read
with function 04, holding registers with 03 and written with 16; every value
is an IEEE-754 float32 over two registers, most significant register first.
Addresses here are the protocol start addresses (register number - 30001 for
input registers, - 40001 for holding registers). See docs/METERS.md.
"""

from __future__ import annotations

from gridclear.metersim.maps._model import Encoding, MeterModel, Point, Setting, Table

__all__ = ["SDM630"]

_F = Encoding.FLOAT32


def _f(address: int, name: str, unit: str, quantity: str) -> Point:
    return Point(address, name, _F, unit=unit, quantity=quantity)


_INPUT = (
    _f(0x0000, "Phase 1 line to neutral volts", "V", "v1"),
    _f(0x0002, "Phase 2 line to neutral volts", "V", "v2"),
    _f(0x0004, "Phase 3 line to neutral volts", "V", "v3"),
    _f(0x0006, "Phase 1 current", "A", "i1"),
    _f(0x0008, "Phase 2 current", "A", "i2"),
    _f(0x000A, "Phase 3 current", "A", "i3"),
    _f(0x000C, "Phase 1 power", "W", "p1"),
    _f(0x000E, "Phase 2 power", "W", "p2"),
    _f(0x0010, "Phase 3 power", "W", "p3"),
    _f(0x0012, "Phase 1 volt amps", "VA", "va1"),
    _f(0x0014, "Phase 2 volt amps", "VA", "va2"),
    _f(0x0016, "Phase 3 volt amps", "VA", "va3"),
    _f(0x0018, "Phase 1 volt amps reactive", "VAr", "var1"),
    _f(0x001A, "Phase 2 volt amps reactive", "VAr", "var2"),
    _f(0x001C, "Phase 3 volt amps reactive", "VAr", "var3"),
    _f(0x001E, "Phase 1 power factor", "", "pf1"),
    _f(0x0020, "Phase 2 power factor", "", "pf2"),
    _f(0x0022, "Phase 3 power factor", "", "pf3"),
    _f(0x0024, "Phase 1 phase angle", "°", "angle1"),
    _f(0x0026, "Phase 2 phase angle", "°", "angle2"),
    _f(0x0028, "Phase 3 phase angle", "°", "angle3"),
    _f(0x002A, "Average line to neutral volts", "V", "v_avg"),
    _f(0x002E, "Average line current", "A", "i_avg"),
    _f(0x0030, "Sum of line currents", "A", "i_sum"),
    _f(0x0034, "Total system power", "W", "p"),
    _f(0x0038, "Total system volt amps", "VA", "va"),
    _f(0x003C, "Total system VAr", "VAr", "var"),
    _f(0x003E, "Total system power factor", "", "pf"),
    _f(0x0042, "Total system phase angle", "°", "angle"),
    _f(0x0046, "Frequency of supply voltages", "Hz", "freq"),
    _f(0x0048, "Total import kWh", "kWh", "import_kwh"),
    _f(0x004A, "Total export kWh", "kWh", "export_kwh"),
    _f(0x004C, "Total import kVArh", "kVArh", "import_kvarh"),
    _f(0x004E, "Total export kVArh", "kVArh", "export_kvarh"),
    _f(0x0050, "Total VAh", "kVAh", "vah_kvah"),
    _f(0x0052, "Ah", "Ah", "ah"),
    _f(0x00C8, "Line 1 to Line 2 volts", "V", "v12"),
    _f(0x00CA, "Line 2 to Line 3 volts", "V", "v23"),
    _f(0x00CC, "Line 3 to Line 1 volts", "V", "v31"),
    _f(0x00CE, "Average line to line volts", "V", "v_ll_avg"),
    _f(0x00E0, "Neutral current", "A", "i_n"),
    _f(0x0156, "Total kWh (import + export)", "kWh", "total_kwh"),
    _f(0x0158, "Total kVArh (import + export)", "kVArh", "total_kvarh"),
    _f(0x015A, "L1 import kWh", "kWh", "import_kwh1"),
    _f(0x015C, "L2 import kWh", "kWh", "import_kwh2"),
    _f(0x015E, "L3 import kWh", "kWh", "import_kwh3"),
    _f(0x0160, "L1 export kWh", "kWh", "export_kwh1"),
    _f(0x0162, "L2 export kWh", "kWh", "export_kwh2"),
    _f(0x0164, "L3 export kWh", "kWh", "export_kwh3"),
    _f(0x0166, "L1 total kWh", "kWh", "total_kwh1"),
    _f(0x0168, "L2 total kWh", "kWh", "total_kwh2"),
    _f(0x016A, "L3 total kWh", "kWh", "total_kwh3"),
)

_HOLDING = (
    Point(
        0x0002,
        "Demand period",
        _F,
        unit="min",
        setting=Setting(
            "demand_period", default=60.0, allowed=frozenset({0, 5, 8, 10, 15, 20, 30, 60})
        ),
    ),
    Point(
        0x000A,
        "System type",
        _F,
        setting=Setting("system_type", default=3.0, allowed=frozenset({1.0, 2.0, 3.0})),
        description="1 = 1P2W, 2 = 3P3W, 3 = 3P4W",
    ),
    Point(
        0x000C,
        "Pulse 1 width",
        _F,
        unit="ms",
        setting=Setting("pulse_width", default=100.0, allowed=frozenset({60.0, 100.0, 200.0})),
    ),
    Point(
        0x0012,
        "Network parity stop",
        _F,
        setting=Setting("parity_stop", default=0.0, allowed=frozenset({0.0, 1.0, 2.0, 3.0})),
        description="0 = 1 stop no parity, 1 = even, 2 = odd, 3 = 2 stop no parity",
    ),
    Point(
        0x0014,
        "Network node (Modbus address)",
        _F,
        setting=Setting(
            "node", default_quantity="unit", allowed=frozenset(float(a) for a in range(1, 248))
        ),
        description="1..247; takes effect after a restart",
    ),
    Point(
        0x001C,
        "Network baud rate",
        _F,
        setting=Setting("baud_code", default=2.0, allowed=frozenset({0.0, 1.0, 2.0, 3.0, 4.0})),
        description="0 = 2400, 1 = 4800, 2 = 9600, 3 = 19200, 4 = 38400; after a restart",
    ),
    Point(0xFC00, "Serial number", Encoding.UINT32, quantity="serial"),
)

SDM630 = MeterModel(
    name="sdm630",
    title="Eastron SDM630 (three-phase, 3P4W)",
    phases=3,
    source="Eastron SDM630 Modbus Protocol Implementation v1.x (SDM630-Modbus MID V2 manual)",
    input_registers=Table(_INPUT, max_registers=80, whole_points=True),
    holding_registers=Table(_HOLDING, max_registers=80, whole_points=True),
    identity_quantity="serial",
    manufacturer="Eastron (simulated)",
    model_name="SDM630",
)
