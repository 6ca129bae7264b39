"""Site files and --meter specs: the examples load, every mistake gets a clear, counted reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridclear.metersim.errors import ConfigError
from gridclear.metersim.faults import FaultKind
from gridclear.metersim.site import load_site, parse_meter_arg, site_from_args

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["site.toml", "demo-site.toml"])
def test_the_example_site_files_load(name: str) -> None:
    site = load_site(EXAMPLES / name)
    assert site.meter_count >= 3


def test_the_full_example_uses_every_feature() -> None:
    site = load_site(EXAMPLES / "site.toml")
    assert {b.transport for b in site.buses} == {"tcp", "rtu"}
    assert {f.fault.kind for f in site.faults} == set(FaultKind)
    assert site.speed == 60
    assert site.seed == 42


def test_meter_spec_with_a_unit_range_and_a_signed_flat_profile() -> None:
    specs = parse_meter_arg("3-5:sdm120:flat:-1500")
    assert [s.unit for s in specs] == [3, 4, 5]
    assert {s.profile for s in specs} == {"flat:-1500"}
    assert [s.name for s in specs] == ["tcp/3", "tcp/4", "tcp/5"]


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        ("1:sdm999:pv", "unknown_model", "unknown meter model 'sdm999'"),
        ("1:sdm630:wind", "unknown_profile", "unknown profile 'wind'"),
        ("0:sdm630:pv", "bad_unit", "1 to 247"),
        ("248:sdm630:pv", "bad_unit", "1 to 247"),
        ("1-300:sdm630:pv", "bad_unit", "1 to 247"),
        ("x:sdm630:pv", "bad_unit", "not a number"),
        ("1:sdm630", "bad_meter", "UNIT:MODEL:PROFILE"),
    ],
)
def test_bad_meter_specs(spec: str, reason: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_meter_arg(spec)
    assert caught.value.reason == reason


def test_a_unit_twice_on_one_line_is_refused() -> None:
    with pytest.raises(ConfigError, match="used twice") as caught:
        site_from_args(
            host="127.0.0.1",
            port=0,
            meters=["1:sdm630:pv", "1:sdm120:pv"],
            speed=1,
            seed=0,
            start=None,
        )
    assert caught.value.reason == "duplicate_unit"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


GOOD_BUS = """
[[bus]]
name = "a"
port = 0
[[bus.meter]]
unit = 1
model = "sdm630"
profile = "pv"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speed = [", "not a valid TOML file"),
        ("colour = 'red'\n" + GOOD_BUS, "unknown key(s) colour"),
        ("", "no buses"),
        (GOOD_BUS.replace('"pv"', '"solar"'), "unknown profile 'solar'"),
        (GOOD_BUS.replace('"sdm630"', '"abb"'), "unknown meter model 'abb'"),
        (GOOD_BUS.replace("unit = 1", "unit = 300"), "1 to 247"),
        (GOOD_BUS.replace("unit = 1", 'unit = "1"'), "expected an integer"),
        (GOOD_BUS.replace("port = 0", "port = 70000"), "out of range"),
        (GOOD_BUS.replace("port = 0", 'transport = "udp"'), "transport must be"),
        (GOOD_BUS + "[[fault]]\nmeter = 'a/9'\nkind = 'timeout'\n", "no meter named 'a/9'"),
        (GOOD_BUS + "[[fault]]\nmeter = 'a/1'\nkind = 'fire'\n", "unknown fault kind"),
        (GOOD_BUS + "[[fault]]\nmeter = 'a/1'\nkind = 'bad-crc'\n", "needs an RTU line"),
        (GOOD_BUS + "[[fault]]\nmeter = 'a/1'\nkind = 'slow'\ndelay_s = -1\n", "must be >= 0"),
        ("speed = -2\n" + GOOD_BUS, "speed must be"),
        ("start = 'yesterday'\n" + GOOD_BUS, "ISO 8601"),
    ],
)
def test_malformed_site_files_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site(_write(tmp_path, text))
    assert message in str(caught.value)
    assert caught.value.reason


def test_a_missing_site_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read site file"):
        load_site(tmp_path / "nope.toml")
