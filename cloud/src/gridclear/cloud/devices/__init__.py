"""Gateways, their keys and their meters: enrolment, rotation, revocation, binding.

The registry functions take an open async connection (autocommit) and open their
own transactions where they write more than one row. Every change to a device or
a key bumps ``device_key_version`` (a trigger), which is how ingest workers learn
to reload their key cache before the next batch.
"""

from gridclear.cloud.devices.registry import (
    Device,
    DeviceError,
    DeviceExistsError,
    DeviceKeyInfo,
    EnrolmentError,
    EnrolmentToken,
    HasKeyError,
    KeyConflictError,
    Meter,
    MeterRole,
    NotFoundError,
    add_key,
    bind_meter,
    create_device,
    enrol,
    get_device,
    get_meter,
    issue_enrolment_token,
    list_devices,
    list_keys,
    list_meters,
    quarantine_stats,
    revoke_key,
    rotate_key,
)

__all__ = [
    "Device",
    "DeviceError",
    "DeviceExistsError",
    "DeviceKeyInfo",
    "EnrolmentError",
    "EnrolmentToken",
    "HasKeyError",
    "KeyConflictError",
    "Meter",
    "MeterRole",
    "NotFoundError",
    "add_key",
    "bind_meter",
    "create_device",
    "enrol",
    "get_device",
    "get_meter",
    "issue_enrolment_token",
    "list_devices",
    "list_keys",
    "list_meters",
    "quarantine_stats",
    "revoke_key",
    "rotate_key",
]
