"""Every exception gridclear-shared raises on purpose, as one tree.

    GridclearSharedError          the root; ``code`` is a stable code
    ProtocolError                 a message is refused; ``code`` says why
    ├── MalformedMessageError     not a JWS compact serialization, bad base64url or JSON
    ├── MessageTooLargeError      over :data:`~gridclear.shared.protocol.MAX_MESSAGE_BYTES`
    ├── UnsupportedAlgorithmError ``alg`` is not Ed25519 (or the deprecated EdDSA)
    ├── UnknownKeyError           no key is known for the ``kid``
    ├── BadSignatureError         the signature does not verify with the key
    ├── UnknownVersionError       the payload's ``v`` is not one this code knows
    ├── InvalidPayloadError       the payload does not match the schema of its version
    └── DeviceMismatchError       the payload's ``device_id`` is not the expected one
    KeyFileError                  a device key file is missing, unsafe or unreadable (an OSError)

``code`` feeds metrics, logs and quarantine records; its values never change meaning
once released. For a refused message it is a :class:`Reason`. ``reason`` is the
same value under its older name, kept because the ingest quarantine records and
their metrics are labelled by it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

__all__ = [
    "BadSignatureError",
    "DeviceMismatchError",
    "GridclearSharedError",
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


class GridclearSharedError(Exception):
    """Base of every error gridclear-shared raises on purpose; ``code`` is stable."""

    code: str = "shared_error"


class ProtocolError(GridclearSharedError, ValueError):
    """A message was refused. ``code`` says why in a stable code, ``detail`` in words.

    Also a ``ValueError``: a message that cannot be read is a bad value.
    """

    code: Reason = Reason.MALFORMED

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.code.value}: {detail}")

    @property
    def reason(self) -> Reason:
        """``code`` under its older name (quarantine records and metrics use it)."""
        return self.code


class MalformedMessageError(ProtocolError):
    code = Reason.MALFORMED


class MessageTooLargeError(ProtocolError):
    code = Reason.TOO_LARGE


class UnsupportedAlgorithmError(ProtocolError):
    code = Reason.BAD_ALGORITHM


class UnknownKeyError(ProtocolError):
    code = Reason.UNKNOWN_KEY


class BadSignatureError(ProtocolError):
    code = Reason.BAD_SIGNATURE


class UnknownVersionError(ProtocolError):
    code = Reason.UNKNOWN_VERSION


class InvalidPayloadError(ProtocolError):
    code = Reason.INVALID_PAYLOAD


class DeviceMismatchError(ProtocolError):
    code = Reason.DEVICE_MISMATCH


class KeyFileError(GridclearSharedError, OSError):
    """A device key file cannot be used; the message names the file and the problem."""

    code = "key_file"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"key file {path}: {problem}")
