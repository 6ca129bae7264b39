"""The gateway reads the real simulator over Modbus RTU on a pseudo-terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gridclear.devtools.metersim import MetersimProcess
from gridclear.edge.config import load_config
from gridclear.edge.modbus import MeterPool
from gridclear.shared.readings import Quality

SITE = """
seed = 11
speed = 0
start = "2026-06-21T10:00:00Z"

[[bus]]
name = "line"
transport = "rtu"
baud = 19200
parity = "N"
stopbits = 1

[[bus.meter]]
unit = 1
model = "sdm630"
profile = "flat:2000"

[[bus.meter]]
unit = 2
model = "sunspec"
profile = "flat:-1500"
"""


def _edge_config(folder: Path, pty: str) -> Path:
    meters = "".join(
        f"""
[[meters]]
name = "{name}"
transport = "rtu"
device = "{pty}"
baudrate = 19200
parity = "N"
stopbits = 1
unit = {unit}
model = "{model}"
timeout_s = 1
retries = 0
"""
        for name, unit, model in [
            ("grid", 1, "sdm630"),
            ("battery", 2, "sunspec"),
            ("gone", 3, "sdm120"),
        ]
    )
    path = folder / "edge.toml"
    path.write_text(
        'device_id = "gw-rtu"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n' + meters
    )
    return path


async def test_eastron_and_sunspec_meters_share_one_rtu_line(
    metersim: Callable[..., MetersimProcess], tmp_path: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    simulator = metersim(site=site)
    assert simulator.pty is not None
    config = load_config(_edge_config(tmp_path, simulator.pty))

    async with MeterPool(config.meters) as pool:
        readings = {r.meter: r for r in await pool.read_once()}
        status = pool.status()

    grid, battery, gone = readings["grid"], readings["battery"], readings["gone"]
    assert grid.power_w == 2000
    assert grid.quality == frozenset()
    assert grid.voltage_v is not None
    assert len(grid.voltage_v) == 3
    assert battery.power_w == -1500  # SunSpec: negative exports, scale factor applied
    assert battery.quality == frozenset()
    assert battery.import_wh is not None
    assert battery.export_wh is not None
    # A unit nobody answers on the line is flagged, and did not stop the others.
    assert Quality.READ_ERROR in gone.quality
    assert gone.import_wh is None
    assert status["battery"].model == "sunspec-203"
    assert status["gone"].consecutive_errors >= 1
