"""Wire protocol v1: the signed readings message and the gateway status message.

A readings message is a JWS compact serialization (see :mod:`gridclear.shared.jws`)
whose payload is the UTF-8 JSON of a :class:`ReadingsPayload`::

    {"v":1,"device_id":"gw-1","seq":42,"signed_ms":1767225600000,
     "prev":"<hex SHA-256 of message 41's payload bytes>","clock":{"synced":true},
     "readings":[{"meter":"m1","ts_ms":1767225599870,"import_wh":123456,...}]}

Contracts:

- ``seq`` starts at 1 and grows by exactly one per message of a device, across
  restarts; a gap means a message is missing, a repeat is a redelivery.
- ``prev`` is the SHA-256 (hex) of the previous message's exact payload bytes
  (``null`` only for the device's first message): a hash chain, so whoever holds
  the messages can prove that none was removed, inserted or changed in between.
- ``clock`` is the gateway's clock state when it signed; readings taken while it
  was not synchronised carry the ``clock_unsynced`` quality flag too.
- ``thinned`` counts the readings that the gateway's outbox dropped since the
  previous message to survive a long outage (see docs/PROTOCOL.md); 0 normally.
- The signature covers the exact payload bytes: a receiver verifies and parses
  those bytes, and keeps them, never a re-encoding.
- A payload with an unknown ``v`` is refused with ``unknown_version``, never guessed;
  ``v`` is the JSON integer 1, not ``true`` or ``1.0`` (which compare equal to it in
  Python). Every type is checked exactly: no booleans for numbers, no strings for
  numbers, no NaN or infinity.
- Nothing is parsed before its nesting is bounded (:data:`MAX_JSON_DEPTH`), so a
  hostile message is refused with its reason and never breaks the parser.

:func:`encode_payload` is deterministic (fixed key order, no whitespace, absent
values left out), so the worked examples in docs/PROTOCOL.md are reproducible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gridclear.shared.errors import (
    DeviceMismatchError,
    InvalidPayloadError,
    MessageTooLargeError,
    UnknownVersionError,
)
from gridclear.shared.jws import (
    MAX_JSON_DEPTH,
    JwsHeader,
    KeyLookup,
    json_depth_within,
    sign_compact,
    verify_compact,
)
from gridclear.shared.keys import DeviceKey, PublicKey
from gridclear.shared.readings import Reading
from gridclear.shared.topics import DEVICE_ID_PATTERN

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_READINGS_PER_MESSAGE",
    "PROTOCOL_VERSION",
    "ClockState",
    "ReadingsPayload",
    "SignedMessage",
    "StatusMessage",
    "VerifiedMessage",
    "decode_payload",
    "encode_payload",
    "encode_reading",
    "json_depth_within",
    "payload_digest",
    "sign_readings",
    "verify_readings",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
"""The largest readings message (the whole JWS) a receiver must accept."""
MAX_READINGS_PER_MESSAGE = 1000
"""Keeps a message well under MAX_MESSAGE_BYTES with three-phase readings."""

_SHA256_HEX = r"[0-9a-f]{64}"


def _exactly_an_int(value: Any) -> Any:
    """``v`` as sent: the JSON integer, not ``true`` or ``1.0`` (both equal 1 in Python)."""
    if type(value) is not int:
        raise ValueError(f"the version is a JSON integer, not {type(value).__name__}")
    return value


def _is_version(value: Any) -> bool:
    return type(value) is int and value == PROTOCOL_VERSION


class ClockState(BaseModel):
    """The gateway's clock when it signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    synced: bool
    """True when the system clock was synchronised (NTP, GPS) at signing time."""
    max_error_ms: int | None = Field(default=None, ge=0)
    """The kernel's estimate of the maximum clock error, ms, when known."""


class ReadingsPayload(BaseModel):
    """The signed payload of a readings message, version 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    device_id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$")
    seq: int = Field(ge=1, lt=2**63)
    signed_ms: int = Field(ge=0)
    """When the gateway signed the message, UTC ms since the epoch."""
    prev: str | None = Field(pattern=f"^{_SHA256_HEX}$")
    clock: ClockState
    thinned: int = Field(default=0, ge=0)
    readings: tuple[Reading, ...] = Field(max_length=MAX_READINGS_PER_MESSAGE)

    _exact_version = field_validator("v", mode="before")(_exactly_an_int)


def encode_reading(reading: Reading) -> dict[str, Any]:
    """A reading as its JSON object: absent values left out, quality flags sorted."""
    data: dict[str, Any] = {"meter": reading.meter, "ts_ms": reading.ts_ms}
    for name in ("import_wh", "export_wh", "power_w"):
        value = getattr(reading, name)
        if value is not None:
            data[name] = value
    if reading.voltage_v is not None:
        data["voltage_v"] = list(reading.voltage_v)
    if reading.current_a is not None:
        data["current_a"] = list(reading.current_a)
    if reading.frequency_hz is not None:
        data["frequency_hz"] = reading.frequency_hz
    if reading.quality:
        data["quality"] = sorted(flag.value for flag in reading.quality)
    return data


def encode_payload(payload: ReadingsPayload) -> bytes:
    """The payload's bytes, deterministically: what is signed and hashed."""
    clock: dict[str, Any] = {"synced": payload.clock.synced}
    if payload.clock.max_error_ms is not None:
        clock["max_error_ms"] = payload.clock.max_error_ms
    data: dict[str, Any] = {
        "v": payload.v,
        "device_id": payload.device_id,
        "seq": payload.seq,
        "signed_ms": payload.signed_ms,
        "prev": payload.prev,
        "clock": clock,
    }
    if payload.thinned:
        data["thinned"] = payload.thinned
    data["readings"] = [encode_reading(r) for r in payload.readings]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def payload_digest(payload_bytes: bytes) -> str:
    """The hex SHA-256 of a payload's bytes: the next message's ``prev``."""
    return hashlib.sha256(payload_bytes).hexdigest()


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def decode_payload(data: bytes, *, expected_device_id: str | None = None) -> ReadingsPayload:
    """Parse and validate payload bytes.

    Raises UnknownVersionError for a ``v`` other than the integer 1,
    InvalidPayloadError for anything that is not a valid v1 payload (nesting deeper
    than :data:`MAX_JSON_DEPTH` included, checked before parsing),
    DeviceMismatchError when ``expected_device_id`` is given and the payload names
    another device. Never raises anything else.
    """
    if not json_depth_within(data, MAX_JSON_DEPTH):
        raise InvalidPayloadError(f"the payload is nested deeper than {MAX_JSON_DEPTH}")
    try:
        payload = ReadingsPayload.model_validate_json(data, strict=True)
    except ValidationError as error:
        # Only on the error path: find out whether it was a version we do not know.
        try:
            raw: Any = json.loads(data)
        except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
            raise InvalidPayloadError("the payload is not UTF-8 JSON") from None
        if not isinstance(raw, dict):
            raise InvalidPayloadError("the payload is not a JSON object") from None
        if "v" not in raw:
            raise InvalidPayloadError("the payload has no version 'v'") from None
        if not _is_version(raw["v"]):
            version = repr(raw["v"])[:40]
            raise UnknownVersionError(f"payload version {version} is not supported") from None
        raise InvalidPayloadError(_describe(error)) from None
    if expected_device_id is not None and payload.device_id != expected_device_id:
        raise DeviceMismatchError(
            f"the payload is from device {payload.device_id!r}, expected {expected_device_id!r}"
        )
    return payload


@dataclass(frozen=True)
class SignedMessage:
    """A readings message as the gateway keeps and sends it."""

    token: str
    """The JWS compact serialization: what goes on the wire."""
    payload: ReadingsPayload
    digest: str
    """SHA-256 of the payload bytes; the next message's ``prev``."""


def sign_readings(payload: ReadingsPayload, key: DeviceKey) -> SignedMessage:
    """Encode and sign ``payload``; MessageTooLargeError if the token would be too large."""
    data = encode_payload(payload)
    token = sign_compact(data, key)
    if len(token) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"the message is {len(token)} bytes, over the limit of {MAX_MESSAGE_BYTES}"
        )
    return SignedMessage(token=token, payload=payload, digest=payload_digest(data))


@dataclass(frozen=True)
class VerifiedMessage:
    """A readings message whose signature, version, schema and device were checked."""

    header: JwsHeader
    payload: ReadingsPayload
    payload_bytes: bytes
    digest: str


def verify_readings(
    token: str | bytes, *, key: PublicKey | KeyLookup, expected_device_id: str
) -> VerifiedMessage:
    """Verify a readings message from the device ``expected_device_id``.

    ``key`` is that device's public key or a ``kid`` lookup (which must only find
    keys of that device). Raises a :class:`~gridclear.shared.errors.ProtocolError`
    subclass, with a stable ``reason``, on any failure; never anything else.
    """
    if len(token) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(f"{len(token)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
    header, data = verify_compact(token, key)
    payload = decode_payload(data, expected_device_id=expected_device_id)
    return VerifiedMessage(
        header=header, payload=payload, payload_bytes=data, digest=payload_digest(data)
    )


class StatusMessage(BaseModel):
    """The retained status of a gateway (plain JSON, not signed: it proves nothing).

    The last will carries ``state: "offline"`` and the ``ts_ms`` of the connection
    it belongs to; the gateway publishes ``online`` when it connects and refreshes
    the counters now and then.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    device_id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$")
    state: Literal["online", "offline"]
    ts_ms: int = Field(ge=0)
    agent: str | None = None
    """Agent name and version, e.g. ``gridclear-edge 0.1.0``."""
    kid: str | None = None
    """The key the gateway signs with."""
    last_seq: int | None = None
    """The highest sequence number signed so far."""
    outbox_depth: int | None = None
    """Messages signed but not yet acknowledged by the broker."""
    oldest_unsent_ms: int | None = None
    thinned_readings: int | None = None
    """Readings dropped by outbox thinning since the outbox was created."""
    meters_failing: tuple[str, ...] | None = None
    """Meters whose last poll failed."""

    _exact_version = field_validator("v", mode="before")(_exactly_an_int)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> StatusMessage:
        """Parse a received status with exact types (no ``true`` for 1, no ``"5"`` for 5).

        Raises MessageTooLargeError over :data:`MAX_MESSAGE_BYTES`, InvalidPayloadError
        for anything else that is not a valid status (nesting deeper than
        :data:`MAX_JSON_DEPTH` included, checked before parsing); never anything else.
        """
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(f"{len(data)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
        if not json_depth_within(data, MAX_JSON_DEPTH):
            raise InvalidPayloadError(f"the status is nested deeper than {MAX_JSON_DEPTH}")
        try:
            return cls.model_validate_json(data, strict=True)
        except ValidationError as error:
            raise InvalidPayloadError(_describe(error)) from None
