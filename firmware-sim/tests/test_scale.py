"""One process serves over 2,000 meters on several TCP ports and keeps answering."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from pymodbus.client import ModbusTcpClient

from gridclear.devtools.metersim import MetersimProcess

Metersim = Callable[..., MetersimProcess]
PORTS, UNITS = 9, 223  # 2,007 meters
MODELS = ("sdm630", "sdm120", "sunspec")
PROFILES = ("household", "household+pv:5000", "pv", "ev", "battery")


def test_two_thousand_meters_across_nine_ports(metersim: Metersim, tmp_path: Path) -> None:
    lines = ["speed = 60", "seed = 5"]
    for bus in range(PORTS):
        lines += [f'[[bus]]\nname = "gw{bus}"\nport = 0']
        for unit in range(1, UNITS + 1):
            model, profile = MODELS[unit % 3], PROFILES[(unit + bus) % 5]
            lines += [f'[[bus.meter]]\nunit = {unit}\nmodel = "{model}"\nprofile = "{profile}"']
    site = tmp_path / "big.toml"
    site.write_text("\n".join(lines) + "\n")
    sim = metersim(site=site)
    buses = sim.buses
    assert sum(len(b.units) for b in buses) >= 2000
    assert len({b.port for b in buses}) == PORTS
    sample = random.Random(1)
    for bus in buses:
        assert bus.port is not None
        c = ModbusTcpClient(bus.host or "127.0.0.1", port=bus.port, timeout=5, retries=0)
        assert c.connect()
        try:
            for unit in (1, UNITS, *sample.sample(range(2, UNITS), 3)):
                model = MODELS[unit % 3]
                if model == "sunspec":
                    response = c.read_holding_registers(40000, count=125, device_id=unit)
                else:
                    response = c.read_input_registers(0, count=80, device_id=unit)
                assert not response.isError(), (bus.name, unit, response)
        finally:
            c.close()
