"""The demo's gateways: one per household, configured as an installer would."""

from __future__ import annotations

from pathlib import Path

from gridclear.devtools._demo_plan import edge_config_toml, gateways_from_site, meter_role
from gridclear.edge.config import load_config

READY = {
    "speed": 60.0,
    "buses": [
        {
            "name": "street",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": 40123,
            "meters": [
                {"name": "house1-grid", "unit": 1, "model": "sdm630"},
                {"name": "house1-pv", "unit": 2, "model": "sdm120"},
                {"name": "house2-grid", "unit": 3, "model": "sdm630"},
                {"name": "house2-wallbox", "unit": 4, "model": "sdm630"},
                {"name": "house4-grid", "unit": 6, "model": "sunspec"},
            ],
        },
        {"name": "line", "transport": "rtu", "device": "/dev/pts/9", "meters": []},
    ],
}


def test_one_gateway_per_household_with_its_own_meters() -> None:
    gateways = gateways_from_site(READY)
    assert [g.device_id for g in gateways] == ["gw-house1", "gw-house2", "gw-house4"]
    assert [m.name for m in gateways[0].meters] == ["house1-grid", "house1-pv"]
    assert {m.port for g in gateways for m in g.meters} == {40123}


def test_roles_follow_what_a_meter_measures() -> None:
    assert meter_role("house1-grid") == "both"
    assert meter_role("house1-pv") == "export"
    assert meter_role("house2-wallbox") == "import"


def test_generated_configuration_loads_with_the_edge_loader(tmp_path: Path) -> None:
    gateway = gateways_from_site(READY)[1]
    path = tmp_path / "edge.toml"
    path.write_text(
        edge_config_toml(
            gateway,
            key_file=tmp_path / "device.key",
            outbox=tmp_path / "outbox.db",
            mqtt_url="mqtt://127.0.0.1:1883",
        )
    )
    config = load_config(path)
    assert config.device_id == "gw-house2"
    assert [(m.name, m.unit, m.model, m.port) for m in config.meters] == [
        ("house2-grid", 3, "sdm630", 40123),
        ("house2-wallbox", 4, "sdm630", 40123),
    ]
