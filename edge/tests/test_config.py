"""The configuration file: what an installer writes, and the one message a mistake gets."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gridclear.edge.config import ConfigError, load_config, parse_config

ISSUE_EXAMPLE = """\
device_id = "gw-1"
key_file = "/var/lib/gridclear/device.key"
outbox = "/var/lib/gridclear/outbox.db"
[mqtt]
url = "mqtt://127.0.0.1:1883"      # mqtts:// for TLS; ca_file, cert_file, key_file, ...
[[meters]]
name = "m1"
transport = "tcp"                  # or "rtu": device, baudrate, parity, stopbits
host = "127.0.0.1"
port = 5020
unit = 1
model = "sdm630"                   # sdm630, sdm120, sunspec (discovered)
poll_interval_s = 1
"""

BASE: dict[str, Any] = {
    "device_id": "gw-1",
    "key_file": "/k",
    "outbox": "/o",
    "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    "meters": [
        {"name": "m1", "transport": "tcp", "host": "127.0.0.1", "unit": 1, "model": "sdm630"},
        {"name": "m2", "transport": "rtu", "device": "/dev/ttyUSB0", "unit": 2, "model": "sdm120"},
    ],
}


def problem(change: Any) -> str:
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def test_the_shape_in_the_issue_loads(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path)
    assert config.device_id == "gw-1"
    assert config.key_file == Path("/var/lib/gridclear/device.key")
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883
    assert not config.mqtt.tls
    (meter,) = config.meters
    assert (meter.name, meter.transport, meter.host, meter.port, meter.unit) == (
        "m1",
        "tcp",
        "127.0.0.1",
        5020,
        1,
    )
    assert meter.model == "sdm630"
    assert meter.poll_interval_s == 1.0
    assert meter.address == "tcp://127.0.0.1:5020#1"


def test_defaults_an_installer_can_rely_on() -> None:
    config = parse_config(BASE)
    tcp, rtu = config.meters
    assert (tcp.port, tcp.timeout_s, tcp.retries, tcp.poll_interval_s) == (502, 1.0, 2, 1.0)
    assert tcp.gap_s == 0.0
    assert (rtu.baudrate, rtu.parity, rtu.stopbits) == (9600, "N", 1)
    assert rtu.gap_s == 0.02
    assert rtu.bus == ("rtu", "/dev/ttyUSB0", 0)


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "edge.toml"
    path.parent.mkdir()
    path.write_text(
        ISSUE_EXAMPLE.replace("/var/lib/gridclear/device.key", "device.key").replace(
            'url = "mqtt://127.0.0.1:1883"',
            'url = "mqtts://broker.example:8883"\nca_file = "ca.pem"',
        )
    )
    config = load_config(path)
    assert config.key_file == path.parent.resolve() / "device.key"
    assert config.mqtt.ca_file == path.parent.resolve() / "ca.pem"
    assert config.mqtt.tls
    assert config.mqtt.port == 8883


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["meters"][1].update(unit=300), "meters[1].unit: must be between 1 and 247"),
        (lambda d: d["meters"][0].update(unit=0), "meters[0].unit: must be between 1 and 247"),
        (lambda d: d["meters"][0].update(unit="1"), "meters[0].unit: must be an integer (got '1')"),
        (lambda d: d["meters"][0].update(unit=True), "meters[0].unit: must be an integer"),
        (lambda d: d["meters"][0].update(uint=3), "meters[0].uint: is not a known key"),
        (lambda d: d.update(devce_id="x"), "devce_id: is not a known key"),
        (lambda d: d["meters"][0].update(transport="rs485"), "meters[0].transport: must be one of"),
        (lambda d: d["meters"][0].update(model="sdm72"), "meters[0].model: must be one of"),
        (
            lambda d: d["meters"][0].pop("host"),
            'meters[0].host: is required when transport = "tcp"',
        ),
        (lambda d: d["meters"][1].pop("device"), "meters[1].device: is required when transport"),
        (
            lambda d: d["meters"][1].update(host="h"),
            'meters[1].host: is for transport = "tcp" only',
        ),
        (
            lambda d: d["meters"][0].update(port=70000),
            "meters[0].port: must be between 1 and 65535",
        ),
        (lambda d: d["meters"][1].update(stopbits=3), "meters[1].stopbits: must be one of 1 or 2"),
        (lambda d: d["meters"][1].update(parity="X"), "meters[1].parity: must be one of"),
        (lambda d: d["meters"][1].update(baudrate=5), "meters[1].baudrate: must be between 300"),
        (lambda d: d["meters"][0].update(poll_interval_s=0), "meters[0].poll_interval_s: must be"),
        (
            lambda d: d["meters"][0].update(timeout_s=float("inf")),
            "meters[0].timeout_s: must be a fin",
        ),
        (lambda d: d["meters"][0].update(retries=-1), "meters[0].retries: must be at least 0"),
        (
            lambda d: d["meters"][1].update(name="m1"),
            "meters[1].name: 'm1' is already used by meters[0]",
        ),
        (lambda d: d["meters"][1].update(name="a/b"), "meters[1].name: must be 1 to 64 letters"),
        (lambda d: d.pop("device_id"), "device_id: is required"),
        (lambda d: d.update(device_id="gw/1"), "device_id: must be 1 to 64 letters"),
        (lambda d: d.update(meters={"name": "m"}), "meters: must be a list"),
        (lambda d: d.update(mqtt="mqtt://x"), "mqtt: must be a table"),
        (
            lambda d: d["mqtt"].update(url="http://x"),
            "mqtt.url: must start with mqtt:// or mqtts://",
        ),
        (lambda d: d["mqtt"].update(url="mqtt://"), "mqtt.url: names no host"),
        (lambda d: d["mqtt"].update(ca_file="ca.pem"), "mqtt.ca_file: needs an mqtts:// url"),
        (
            lambda d: d["mqtt"].update(url="mqtts://h", cert_file="c.pem"),
            "mqtt.key_file: is required when the other half of the client certificate is set",
        ),
        (lambda d: d["mqtt"].update(password="p"), "mqtt.username: is required when password"),
    ],
)
def test_one_clear_message_names_the_key_and_the_problem(change: Any, expected: str) -> None:
    message = problem(change)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert "Traceback" not in message


def test_meters_on_one_bus_must_agree_on_the_line() -> None:
    def second_on_same_line(d: dict[str, Any]) -> None:
        d["meters"].append(dict(d["meters"][1], name="m3", unit=3, baudrate=19200))

    assert problem(second_on_same_line) == (
        "meters[2].baudrate: 19200 differs from 9600 set by meters[1] on the same bus /dev/ttyUSB0"
    )

    def same_unit_twice(d: dict[str, Any]) -> None:
        d["meters"].append(dict(d["meters"][1], name="m3"))

    assert problem(same_unit_twice) == (
        "meters[2].unit: unit 2 on /dev/ttyUSB0 is already meters[1]"
    )

    def gap_differs(d: dict[str, Any]) -> None:
        d["meters"].append(dict(d["meters"][0], name="m3", unit=3, request_gap_s=0.1))

    assert problem(gap_differs).startswith("meters[2].request_gap_s: 0.1 differs from 0.0")


def test_several_problems_are_counted_in_the_one_message() -> None:
    def two(d: dict[str, Any]) -> None:
        d["meters"][0]["unit"] = 999
        d["meters"][1]["unit"] = 999

    assert problem(two) == "meters[0].unit: must be between 1 and 247 (and 1 more problem)"


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text('device_id = "gw-1\n')
    with pytest.raises(ConfigError, match=r"broken\.toml: is not valid TOML: .*line 1"):
        load_config(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(binary)
    bad = tmp_path / "bad.toml"
    bad.write_text(ISSUE_EXAMPLE.replace("unit = 1", "unit = 248"))
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert str(caught.value) == f"{bad}: meters[0].unit: must be between 1 and 247"
    assert caught.value.key == "meters[0].unit"


def test_the_password_is_never_shown() -> None:
    data = copy.deepcopy(BASE)
    data["mqtt"].update(username="gw-1", password="s3cret-Passw0rd")
    config = parse_config(data)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.mqtt)
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret-Passw0rd"


EPOCH = datetime(2030, 6, 21, 9, tzinfo=UTC)

SIMULATION = """
[simulation]
speed = 60
epoch = 2030-06-21T09:00:00Z
epoch_at = 2026-12-03T18:00:00Z
"""


def test_a_simulated_clock_is_refused_in_production(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    # No environment key: a gateway is in production unless its file says otherwise.
    path.write_text(ISSUE_EXAMPLE.replace("[mqtt]", SIMULATION + "\n[mqtt]"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: simulation: a simulated clock is for demos and tests")
    assert "refused in production" in message
    assert 'environment = "development"' in message
    assert "\n" not in message

    explicit = ISSUE_EXAMPLE.replace("[mqtt]", SIMULATION + "\n[mqtt]")
    path.write_text('environment = "production"\n' + explicit)
    with pytest.raises(ConfigError, match="refused in production"):
        load_config(path)


def test_a_development_gateway_may_run_on_a_simulated_clock(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        'environment = "development"\n' + ISSUE_EXAMPLE.replace("[mqtt]", SIMULATION + "\n[mqtt]")
    )
    simulation = load_config(path).simulation
    assert simulation is not None
    assert simulation.speed == 60.0
    assert simulation.epoch == datetime(2030, 6, 21, 9, tzinfo=UTC)
    assert simulation.epoch_at == datetime(2026, 12, 3, 18, tzinfo=UTC)
    assert parse_config(BASE).environment == "production"
    assert parse_config(BASE).simulation is None


@pytest.mark.parametrize(
    ("simulation", "expected"),
    [
        ({"speed": 0, "epoch": EPOCH}, "simulation.speed: must be greater than 0"),
        ({"speed": 60}, "simulation.epoch: is required"),
        (
            {"speed": 60, "epoch": "2030-06-21T09:00:00Z"},
            "simulation.epoch: must be a TOML date-time with an offset",
        ),
        (
            {"speed": 60, "epoch": EPOCH.replace(tzinfo=None)},
            "simulation.epoch: must carry a UTC offset",
        ),
        (
            {"speed": 60, "epoch": EPOCH, "epoch_at": EPOCH.replace(tzinfo=None)},
            "simulation.epoch_at: must carry a UTC offset",
        ),
        ({"speed": 60, "epoch": EPOCH, "rate": 2}, "simulation.rate: is not a known key"),
    ],
)
def test_a_bad_simulation_table_gets_one_clear_message(
    simulation: dict[str, Any], expected: str
) -> None:
    message = problem(lambda d: d.update(environment="development", simulation=simulation))
    assert message.startswith(expected), message
