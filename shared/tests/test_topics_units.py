"""Topic names, device ids and units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gridclear.shared.topics import (
    Channel,
    config_topic,
    parse_topic,
    readings_topic,
    status_topic,
    validate_device_id,
)
from gridclear.shared.units import trade_amount, wh_from_kwh


def test_topics_of_a_device() -> None:
    assert readings_topic("gw-1") == "gridclear/v1/devices/gw-1/readings"
    assert status_topic("gw-1") == "gridclear/v1/devices/gw-1/status"
    assert config_topic("gw-1") == "gridclear/v1/devices/gw-1/config"
    assert readings_topic("gw-1", prefix="test/x/") == "test/x/gridclear/v1/devices/gw-1/readings"
    assert parse_topic("gridclear/v1/devices/gw.1_a/status") == ("gw.1_a", Channel.STATUS)
    assert parse_topic("t/gridclear/v1/devices/a/readings", prefix="t/").channel is Channel.READINGS


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "-gw", "a" * 65, "gw 1", "gé"])
def test_unsafe_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        validate_device_id(device_id)
    with pytest.raises(ValueError, match="device id"):
        readings_topic(device_id)


@pytest.mark.parametrize(
    "topic",
    [
        "gridclear/v1/devices/gw-1",
        "gridclear/v2/devices/gw-1/readings",
        "gridclear/v1/devices/gw-1/other",
        "gridclear/v1/devices/+/readings",
        "gridclear/v1/devices/gw-1/readings/x",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match=r"topic|device id"):
        parse_topic(topic)


def test_kwh_converts_exactly_or_not_at_all() -> None:
    assert wh_from_kwh("1.234") == 1234
    assert wh_from_kwh(Decimal(2)) == 2000
    for bad in ("0.0001", "abc", "NaN", "Infinity"):
        with pytest.raises(ValueError, match="kWh"):
            wh_from_kwh(bad)


def test_trade_amount_rounds_down_once() -> None:
    assert trade_amount(1500, 333) == 499  # 499.5
    assert trade_amount(0, 100) == 0
    with pytest.raises(ValueError, match="negative"):
        trade_amount(-1, 100)
