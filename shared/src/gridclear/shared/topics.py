"""MQTT topic names of protocol v1, and the device id rule that keeps them safe.

    gridclear/v1/devices/{device_id}/readings   gateway → cloud, QoS 1, signed batches
    gridclear/v1/devices/{device_id}/status     gateway → all, retained, last will "offline"
    gridclear/v1/devices/{device_id}/config     cloud → gateway, retained

A device id is 1 to 64 characters from ``A-Z a-z 0-9 . _ -`` starting with a letter
or digit: never a topic separator or wildcard, so a device cannot reach into
another device's topics by its name.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "DEVICE_ID_PATTERN",
    "PREFIX",
    "Channel",
    "DeviceTopic",
    "config_topic",
    "parse_topic",
    "readings_topic",
    "status_topic",
    "validate_device_id",
]

PREFIX = "gridclear/v1/devices"
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


class Channel(StrEnum):
    READINGS = "readings"
    STATUS = "status"
    CONFIG = "config"


class DeviceTopic(NamedTuple):
    device_id: str
    channel: Channel


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it follows the rule above; ValueError saying why otherwise."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(
            f"device id {device_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return device_id


def _topic(device_id: str, channel: Channel, prefix: str) -> str:
    return f"{prefix}{PREFIX}/{validate_device_id(device_id)}/{channel.value}"


def readings_topic(device_id: str, *, prefix: str = "") -> str:
    """Where a gateway publishes its signed readings. ``prefix`` (tests) goes in front."""
    return _topic(device_id, Channel.READINGS, prefix)


def status_topic(device_id: str, *, prefix: str = "") -> str:
    """A gateway's retained online/offline status."""
    return _topic(device_id, Channel.STATUS, prefix)


def config_topic(device_id: str, *, prefix: str = "") -> str:
    """The retained configuration the cloud publishes for a gateway."""
    return _topic(device_id, Channel.CONFIG, prefix)


def parse_topic(topic: str, *, prefix: str = "") -> DeviceTopic:
    """The device id and channel of a v1 device topic; ValueError if it is not one."""
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic!r} does not start with {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise ValueError(f"topic {topic!r} is not {PREFIX}/<device_id>/<channel>")
    try:
        channel = Channel(parts[4])
    except ValueError:
        raise ValueError(f"topic {topic!r} has an unknown channel {parts[4]!r}") from None
    return DeviceTopic(validate_device_id(parts[3]), channel)
