"""The demo's gateways: one per household, configured as an installer would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gridclear.devtools._demo_plan import (
    demo_time,
    edge_config_toml,
    gateways_from_site,
    max_clock_ahead_s,
    meter_role,
)
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


@given(
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    longitude=st.floats(min_value=-180, max_value=180),
)
def test_the_demo_starts_simulated_time_on_the_nearest_site_morning(
    now: datetime, longitude: float
) -> None:
    clock = demo_time(now, speed=60, longitude=longitude)
    assert clock.epoch_at == now.replace(microsecond=0)
    assert abs(clock.epoch - now) <= timedelta(hours=12, minutes=1)
    solar = clock.epoch + timedelta(hours=longitude / 15)
    minutes = solar.hour * 60 + solar.minute + solar.second / 60
    assert 9 * 60 - 1 <= minutes <= 9 * 60 + 1  # 9:00 local mean solar time
    assert clock.at(clock.epoch_at) == clock.epoch
    assert clock.at(clock.epoch_at + timedelta(seconds=15)) == clock.epoch + timedelta(minutes=15)


def test_the_ingest_bound_covers_a_week_of_demo_and_no_more() -> None:
    now = datetime(2026, 12, 3, 20, 30, tzinfo=UTC)
    clock = demo_time(now, speed=60, longitude=11.58)  # tomorrow morning: 11.7 h ahead
    bound = timedelta(seconds=max_clock_ahead_s(clock))
    week = now + timedelta(days=7)
    assert clock.at(week) - week <= bound
    assert clock.at(week + timedelta(hours=1)) - (week + timedelta(hours=1)) > bound


def test_demo_gateways_run_on_the_demo_time_as_development_gateways(tmp_path: Path) -> None:
    clock = demo_time(datetime(2026, 12, 3, 18, 4, 7, 250, tzinfo=UTC), speed=60, longitude=11.58)
    path = tmp_path / "edge.toml"
    path.write_text(
        edge_config_toml(
            gateways_from_site(READY)[0],
            key_file=tmp_path / "device.key",
            outbox=tmp_path / "outbox.db",
            mqtt_url="mqtt://127.0.0.1:1883",
            simulation=clock,
        )
    )
    config = load_config(path)
    assert config.environment == "development"
    assert config.simulation is not None
    assert (config.simulation.speed, config.simulation.epoch, config.simulation.epoch_at) == (
        60.0,
        clock.epoch,
        clock.epoch_at,
    )
