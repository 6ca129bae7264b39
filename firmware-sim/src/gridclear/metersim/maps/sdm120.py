"""Eastron SDM120 (single-phase): the Modbus map as Eastron publishes it.

Source: Eastron SDM120-Modbus Smart Meter, Modbus Protocol Implementation
(v2.x). Same conventions as the SDM630: float32 over two registers, function
04 for measurements, 03/16 for settings. See docs/METERS.md.
"""

from __future__ import annotations

from gridclear.metersim.maps._model import Encoding, MeterModel, Point, Setting, Table

__all__ = ["SDM120"]

_F = Encoding.FLOAT32


def _f(address: int, name: str, unit: str, quantity: str) -> Point:
    return Point(address, name, _F, unit=unit, quantity=quantity)


_INPUT = (
    _f(0x0000, "Voltage", "V", "v1"),
    _f(0x0006, "Current", "A", "i1"),
    _f(0x000C, "Active power", "W", "p"),
    _f(0x0012, "Apparent power", "VA", "va"),
    _f(0x0018, "Reactive power", "VAr", "var"),
    _f(0x001E, "Power factor", "", "pf"),
    _f(0x0024, "Phase angle", "°", "angle"),
    _f(0x0046, "Frequency", "Hz", "freq"),
    _f(0x0048, "Import active energy", "kWh", "import_kwh"),
    _f(0x004A, "Export active energy", "kWh", "export_kwh"),
    _f(0x004C, "Import reactive energy", "kVArh", "import_kvarh"),
    _f(0x004E, "Export reactive energy", "kVArh", "export_kvarh"),
    _f(0x0156, "Total active energy", "kWh", "total_kwh"),
    _f(0x0158, "Total reactive energy", "kVArh", "total_kvarh"),
)

_HOLDING = (
    Point(
        0x000C,
        "Relay pulse width",
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
        "Meter ID (Modbus address)",
        _F,
        setting=Setting(
            "node", default_quantity="unit", allowed=frozenset(float(a) for a in range(1, 248))
        ),
        description="1..247; takes effect after a restart",
    ),
    Point(
        0x001C,
        "Baud rate",
        _F,
        setting=Setting("baud_code", default=2.0, allowed=frozenset({0.0, 1.0, 2.0, 5.0})),
        description="0 = 2400, 1 = 4800, 2 = 9600, 5 = 1200; after a restart",
    ),
    Point(0xFC00, "Serial number", Encoding.UINT32, quantity="serial"),
)

SDM120 = MeterModel(
    name="sdm120",
    title="Eastron SDM120 (single-phase)",
    phases=1,
    source="Eastron SDM120-Modbus Protocol Implementation v2.x",
    input_registers=Table(_INPUT, max_registers=80, whole_points=True),
    holding_registers=Table(_HOLDING, max_registers=80, whole_points=True),
    identity_quantity="serial",
    manufacturer="Eastron (simulated)",
    model_name="SDM120",
)
