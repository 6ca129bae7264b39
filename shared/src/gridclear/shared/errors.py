"""Every way a protocol message or a key file can be refused, as one exception tree.

    ProtocolError                 a message is refused; ``reason`` is a stable code
    ├── MalformedMessageError     not a JWS compact serialization, bad base64url or JSON
    ├── MessageTooLargeError      over :data:`~gridclear.shared.protocol.MAX_MESSAGE_BYTES`
    ├── UnsupportedAlgorithmError ``alg`` is not Ed25519 (or the deprecated EdDSA)
    ├── UnknownKeyError           no key is known for the ``kid``
    ├── BadSignatureError         the signature does not verify with the key
    ├── UnknownVersionError       the payload's ``v`` is not one this code knows
    ├── InvalidPayloadError       the payload does not match the schema of its version
    └── DeviceMismatchError       the payload's ``device_id`` is not the expected one
    KeyFileError                  a device key file is missing, unsafe or unreadable

``reason`` (a :class:`Reason`) feeds metrics, logs and quarantine records; its values
never change meaning once released.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

__all__ = [
    "BadSignatureError",
    "DeviceMismatchError",
    "InvalidPayloadError",
    "KeyFileError",
    "MalformedMessageError",
    "MessageTooLargeError",
    "ProtocolError",
    "Reason",
    "UnknownKeyError",
    "UnknownVersionError",
    "UnsupportedAlgorithmError",
]


class Reason(StrEnum):
    """Stable codes for refused messages."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    BAD_ALGORITHM = "bad_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_VERSION = "unknown_version"
    INVALID_PAYLOAD = "invalid_payload"
    DEVICE_MISMATCH = "device_mismatch"


class ProtocolError(ValueError):
    """A message was refused. ``reason`` says why in a stable code, ``detail`` in words."""

    reason: Reason = Reason.MALFORMED

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}")


class MalformedMessageError(ProtocolError):
    reason = Reason.MALFORMED


class MessageTooLargeError(ProtocolError):
    reason = Reason.TOO_LARGE


class UnsupportedAlgorithmError(ProtocolError):
    reason = Reason.BAD_ALGORITHM


class UnknownKeyError(ProtocolError):
    reason = Reason.UNKNOWN_KEY


class BadSignatureError(ProtocolError):
    reason = Reason.BAD_SIGNATURE


class UnknownVersionError(ProtocolError):
    reason = Reason.UNKNOWN_VERSION


class InvalidPayloadError(ProtocolError):
    reason = Reason.INVALID_PAYLOAD


class DeviceMismatchError(ProtocolError):
    reason = Reason.DEVICE_MISMATCH


class KeyFileError(OSError):
    """A device key file cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"key file {path}: {problem}")
