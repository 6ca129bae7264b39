"""Deciding what an incoming MQTT message is: accepted readings, a status, or a refusal. Pure.

Checks for a readings message, in order (the first failure is the reason):

1. the topic is ``<prefix>gridclear/v1/devices/<device>/readings`` (``bad_topic``);
2. the size is within :data:`~gridclear.shared.protocol.MAX_MESSAGE_BYTES` (``too_large``);
3. it is a JWS compact serialization whose header is at most
   :data:`~gridclear.shared.jws.MAX_HEADER_BYTES` long and nests at most
   :data:`~gridclear.shared.jws.MAX_JSON_DEPTH` deep, both checked before it is
   parsed (``malformed``), with an accepted ``alg`` (``bad_algorithm``) naming a
   known ``kid`` (``unknown_key``);
4. that key belongs to the topic's device (``device_mismatch``);
5. the signature verifies (``bad_signature``), the payload nests at most
   ``MAX_JSON_DEPTH`` deep (checked before it is parsed) and its version is the
   integer 1 (``unknown_version``), it matches the schema with exact types, no NaN
   or infinity (``invalid_payload``) and names the topic's device
   (``device_mismatch``);
6. the key was valid (``key_not_valid``) and not revoked (``key_revoked``) at the
   time the payload says it was signed;
7. its signing and sample times are plausible against when it was received
   (``implausible_time``, :mod:`gridclear.cloud.ingest.plausibility`).

A status message: the topic (``bad_topic``), the size (``too_large``), the nesting
and the schema with exact types (``invalid_payload``), the device (``device_mismatch``).

Anything raised while judging a message (a bug, or an input no check foresaw)
makes it ``internal_error``: :func:`classify` never raises, so one message can
never stop a worker, and the message is kept in quarantine for investigation.

What is left for the database (duplicates, sequence conflicts, the hash chain)
needs the stored messages; see :mod:`gridclear.cloud.ingest.writer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gridclear.cloud.ingest.plausibility import TimeWindow, implausible_time
from gridclear.shared.errors import DeviceMismatchError, ProtocolError, UnknownKeyError
from gridclear.shared.jws import KeyLookup, read_header
from gridclear.shared.keys import PublicKey
from gridclear.shared.protocol import (
    ReadingsPayload,
    StatusMessage,
    verify_readings,
)
from gridclear.shared.topics import Channel, parse_topic

__all__ = [
    "Accepted",
    "IngestReason",
    "KeyRecord",
    "Rejected",
    "StatusUpdate",
    "classify",
]


class IngestReason(StrEnum):
    """Why a message went to quarantine. Stable: metrics, logs and the API use these.

    The first eight are the protocol's own (:class:`gridclear.shared.errors.Reason`).
    """

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    BAD_ALGORITHM = "bad_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_VERSION = "unknown_version"
    INVALID_PAYLOAD = "invalid_payload"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_TOPIC = "bad_topic"
    """Not a v1 device topic (readings or status)."""
    KEY_REVOKED = "key_revoked"
    """Signed at or after the key's revocation."""
    KEY_NOT_VALID = "key_not_valid"
    """Signed outside the key's validity (before it was valid, or after it was replaced)."""
    SEQ_CONFLICT = "seq_conflict"
    """Another message with the same device and sequence number, but other content, is stored."""
    STORE_FAILED = "store_failed"
    """Verified, but the database refused to store it (a value it cannot hold)."""
    IMPLAUSIBLE_TIME = "implausible_time"
    """Signed or sampled too far from when it was received (a clock reset, a wrong date)."""
    INTERNAL_ERROR = "internal_error"
    """Judging or storing it raised an exception: a bug, or an input no check foresaw."""


@dataclass(frozen=True)
class KeyRecord:
    """A device key as ingest needs it; times are UTC ms, None for an open bound."""

    kid: str
    device_pk: int
    device_id: str
    public: PublicKey
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    revoked_ms: int | None = None


@dataclass(frozen=True)
class Accepted:
    """A readings message whose signature, payload and key checked out."""

    topic: str
    token: bytes
    device_pk: int
    kid: str
    payload: ReadingsPayload
    digest: bytes
    received_ms: int


@dataclass(frozen=True)
class StatusUpdate:
    topic: str
    device_id: str
    status: StatusMessage
    received_ms: int
    body: bytes = b""
    """The message as received: kept in quarantine if the database refuses the status."""


@dataclass(frozen=True)
class Rejected:
    topic: str
    body: bytes
    reason: IngestReason
    detail: str
    received_ms: int
    device_id: str | None = None
    kid: str | None = None
    seq: int | None = None


def _key_lookup(keys: Mapping[str, KeyRecord], device_id: str, found: list[KeyRecord]) -> KeyLookup:
    def lookup(kid: str) -> PublicKey | None:
        record = keys.get(kid)
        if record is None:
            return None
        if record.device_id != device_id:
            raise DeviceMismatchError(
                f"key {kid} belongs to device {record.device_id!r}, the topic names {device_id!r}"
            )
        found.append(record)
        return record.public

    return lookup


def _check_readings(
    topic: str, device_id: str, body: bytes, keys: Mapping[str, KeyRecord], received_ms: int
) -> Accepted | Rejected:
    found: list[KeyRecord] = []
    try:
        verified = verify_readings(
            body, key=_key_lookup(keys, device_id, found), expected_device_id=device_id
        )
    except ProtocolError as error:
        kid = found[0].kid if found else None
        if isinstance(error, UnknownKeyError | DeviceMismatchError) and not found:
            kid = _kid_of(body)
        return Rejected(
            topic, body, IngestReason(error.reason.value), error.detail, received_ms, device_id, kid
        )
    key = found[0]
    signed = verified.payload.signed_ms
    seq = verified.payload.seq
    if key.revoked_ms is not None and signed >= key.revoked_ms:
        return Rejected(
            topic,
            body,
            IngestReason.KEY_REVOKED,
            f"key {key.kid} was revoked before the message was signed",
            received_ms,
            device_id,
            key.kid,
            seq,
        )
    if (key.valid_from_ms is not None and signed < key.valid_from_ms) or (
        key.valid_until_ms is not None and signed >= key.valid_until_ms
    ):
        return Rejected(
            topic,
            body,
            IngestReason.KEY_NOT_VALID,
            f"key {key.kid} was not valid when the message says it was signed",
            received_ms,
            device_id,
            key.kid,
            seq,
        )
    return Accepted(
        topic=topic,
        token=body,
        device_pk=key.device_pk,
        kid=key.kid,
        payload=verified.payload,
        digest=bytes.fromhex(verified.digest),
        received_ms=received_ms,
    )


def _judge_times(item: Accepted | Rejected, window: TimeWindow | None) -> Accepted | Rejected:
    """``item``, or its refusal when it is accepted but its times are outside ``window``."""
    if window is None or not isinstance(item, Accepted):
        return item
    detail = implausible_time(item.payload, received_ms=item.received_ms, window=window)
    if detail is None:
        return item
    return Rejected(
        item.topic,
        item.token,
        IngestReason.IMPLAUSIBLE_TIME,
        detail,
        item.received_ms,
        item.payload.device_id,
        item.kid,
        item.payload.seq,
    )


def _kid_of(body: bytes) -> str | None:
    """The kid a refused token claims, for the quarantine record (best effort)."""
    try:
        kid = read_header(body).kid
    except ProtocolError:
        return None
    return kid[:200] if kid else None


def _check_status(
    topic: str, device_id: str, body: bytes, received_ms: int
) -> StatusUpdate | Rejected:
    try:
        status = StatusMessage.decode(body)
    except ProtocolError as error:
        return Rejected(
            topic, body, IngestReason(error.reason.value), error.detail, received_ms, device_id
        )
    if status.device_id != device_id:
        return Rejected(
            topic,
            body,
            IngestReason.DEVICE_MISMATCH,
            f"the status is from {status.device_id!r}, the topic names {device_id!r}",
            received_ms,
            device_id,
        )
    return StatusUpdate(topic, device_id, status, received_ms, body)


_DEFAULT_WINDOW = TimeWindow()


def classify(
    topic: str,
    body: bytes,
    *,
    keys: Mapping[str, KeyRecord],
    received_ms: int,
    topic_prefix: str = "",
    time_window: TimeWindow | None = _DEFAULT_WINDOW,
) -> Accepted | StatusUpdate | Rejected:
    """What ``body`` received on ``topic`` is; never raises for any input.

    ``time_window`` bounds the times a readings message may carry (None: any).
    The checks and their order are in the module's docstring. An exception raised
    by any of them becomes a :class:`Rejected` with ``internal_error`` (its type
    and message in ``detail``), so what the worker does with a message never
    depends on whether judging it went wrong.
    """
    try:
        return _classify(topic, body, keys, received_ms, topic_prefix, time_window=time_window)
    except Exception as error:  # the contract: every input gets a verdict
        return Rejected(
            topic,
            body,
            IngestReason.INTERNAL_ERROR,
            f"{type(error).__name__} while judging it: {str(error)[:300]}",
            received_ms,
            _device_of(topic, topic_prefix),
        )


def _device_of(topic: str, topic_prefix: str) -> str | None:
    """The topic's device, for the quarantine record of a message that broke a check."""
    try:
        return parse_topic(topic, prefix=topic_prefix)[0]
    except Exception:  # the topic itself may be what broke it
        return None


def _classify(
    topic: str,
    body: bytes,
    keys: Mapping[str, KeyRecord],
    received_ms: int,
    topic_prefix: str,
    *,
    time_window: TimeWindow | None,
) -> Accepted | StatusUpdate | Rejected:
    try:
        device_id, channel = parse_topic(topic, prefix=topic_prefix)
    except ValueError as error:
        return Rejected(topic, body, IngestReason.BAD_TOPIC, str(error), received_ms)
    if channel is Channel.READINGS:
        return _judge_times(_check_readings(topic, device_id, body, keys, received_ms), time_window)
    if channel is Channel.STATUS:
        return _check_status(topic, device_id, body, received_ms)
    return Rejected(
        topic, body, IngestReason.BAD_TOPIC, "ingest takes readings and status only", received_ms
    )
