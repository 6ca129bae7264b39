"""Devices, keys, enrolment tokens and meters in PostgreSQL.

Key validity is about *signing time*: a message is accepted when the time it was
signed lies in ``[valid_from, valid_until)`` and before ``revoked_at`` (open
bounds when NULL). So rotating a key (``valid_until = now``) keeps the messages
the gateway signed with the old key before the rotation valid, however late its
outbox delivers them, while revocation refuses everything signed from then on.

Enrolment tokens are one-time and expiring; only their SHA-256 is stored (the
token is 256 random bits, so a fast hash is enough: there is nothing to guess).
A device has at most one live token: issuing one revokes the device's earlier
unused ones, and registering a key (by enrolment or by an operator) voids them
all. A token enrols a device that already has a current key only when the
operator issued it as a *rotation*; otherwise an old token found later could
replace the gateway's key. Issuing and enrolling lock the device's row, so two
enrolments of one device run one after the other and the second finds its
token used.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.errors import GridclearCloudError
from gridclear.shared.keys import PublicKey
from gridclear.shared.topics import validate_device_id

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "TOKEN_MARKER",
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

Conn = AsyncConnection[DictRow]

TOKEN_MARKER = "gce_"  # noqa: S105 -- a prefix, not a secret
"""Enrolment tokens start with this, so they are recognisable in logs and leak scanners."""

DEFAULT_TOKEN_TTL = timedelta(hours=24)


class DeviceError(GridclearCloudError):
    """A registry operation was refused; ``code`` is a stable reason."""

    code = "device_error"


class NotFoundError(DeviceError):
    code = "not_found"


class DeviceExistsError(DeviceError):
    code = "device_exists"


class KeyConflictError(DeviceError):
    code = "key_conflict"


class EnrolmentError(DeviceError):
    """The enrolment token is unknown, used, expired or for another device."""

    code = "enrolment_refused"


class HasKeyError(DeviceError):
    """The device has a current key: only a rotation token (or the operator) may replace it."""

    code = "device_has_key"


class MeterRole(StrEnum):
    IMPORT = "import"
    EXPORT = "export"
    BOTH = "both"


@dataclass(frozen=True)
class DeviceKeyInfo:
    kid: str
    device_id: str
    public_key: str
    """base64url (the JWK ``x``)."""
    valid_from: datetime | None
    valid_until: datetime | None
    revoked_at: datetime | None
    source: str
    created_at: datetime


@dataclass(frozen=True)
class Device:
    id: int
    device_id: str
    name: str | None
    site: str | None
    created_at: datetime
    active_keys: int
    state: str | None
    """``online``/``offline`` from the last status message; None before the first."""
    status_at: datetime | None
    last_seq: int | None
    last_message_at: datetime | None
    chain_gaps: int
    chain_breaks: int
    outbox_depth: int | None


@dataclass(frozen=True)
class EnrolmentToken:
    token: str
    """Shown once; only its hash is stored."""
    device_id: str
    expires_at: datetime
    rotation: bool = False
    """The token may replace the device's current key."""


@dataclass(frozen=True)
class Meter:
    id: int
    device_id: str
    name: str
    serial: str | None
    model: str | None
    owner_id: int | None
    role: MeterRole
    created_at: datetime
    last_reading_at: datetime | None
    import_wh: int | None
    export_wh: int | None
    power_w: int | None


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _device_pk(conn: Conn, device_id: str) -> int:
    cur = await conn.execute("SELECT id FROM devices WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no device {device_id!r}")
    return int(row["id"])


async def create_device(
    conn: Conn,
    *,
    device_id: str,
    name: str | None = None,
    site: str | None = None,
    created_by: int | None = None,
) -> Device:
    """Register a gateway (no key yet); DeviceExistsError if the id is taken.

    ``site`` names a site, created on first use.
    """
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise DeviceError(str(exc)) from None
    async with conn.transaction():
        site_pk = None
        if site is not None:
            cur = await conn.execute(
                "INSERT INTO sites (name) VALUES (%s) ON CONFLICT (name)"
                " DO UPDATE SET name = EXCLUDED.name RETURNING id",
                (site,),
            )
            row = await cur.fetchone()
            assert row is not None
            site_pk = row["id"]
        try:
            await conn.execute(
                "INSERT INTO devices (device_id, name, site_id, created_by)"
                " VALUES (%s, %s, %s, %s)",
                (device_id, name, site_pk, created_by),
            )
        except psycopg.errors.UniqueViolation:
            raise DeviceExistsError(f"device {device_id!r} already exists") from None
    return await get_device(conn, device_id)


async def _lock_device(conn: Conn, device_id: str) -> int:
    """The device's primary key, its row locked until the transaction ends."""
    cur = await conn.execute("SELECT id FROM devices WHERE device_id = %s FOR UPDATE", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no device {device_id!r}")
    return int(row["id"])


async def _has_current_key(conn: Conn, pk: int) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM device_keys WHERE device_pk = %s AND revoked_at IS NULL"
        " AND (valid_until IS NULL OR valid_until > now()) LIMIT 1",
        (pk,),
    )
    return await cur.fetchone() is not None


async def _void_tokens(conn: Conn, pk: int) -> None:
    """Revoke every unused token of the device (a newer token, or a key, replaces them)."""
    await conn.execute(
        "UPDATE enrolment_tokens SET revoked_at = now()"
        " WHERE device_pk = %s AND used_at IS NULL AND revoked_at IS NULL",
        (pk,),
    )


def _rotation_hint(device_id: str) -> str:
    return (
        f"device {device_id!r} already has a current key; an operator must rotate it "
        f"(gridclear-cloud devices rotate --device-id {device_id}, or an enrolment token "
        "issued with rotate)"
    )


async def issue_enrolment_token(
    conn: Conn, *, device_id: str, ttl: timedelta = DEFAULT_TOKEN_TTL, rotation: bool = False
) -> EnrolmentToken:
    """A new one-time token for ``device_id``; the device's earlier unused tokens stop working.

    Without ``rotation``, HasKeyError when the device already has a current key:
    a rotation token (the operator's explicit decision) is what replaces a key.
    """
    async with conn.transaction():
        pk = await _lock_device(conn, device_id)
        if not rotation and await _has_current_key(conn, pk):
            raise HasKeyError(_rotation_hint(device_id))
        await _void_tokens(conn, pk)
        token = TOKEN_MARKER + secrets.token_urlsafe(32)
        cur = await conn.execute(
            "INSERT INTO enrolment_tokens (device_pk, token_hash, expires_at, rotation)"
            " VALUES (%s, %s, now() + %s, %s) RETURNING expires_at",
            (pk, _hash_token(token), ttl, rotation),
        )
        row = await cur.fetchone()
    assert row is not None
    return EnrolmentToken(
        token=token, device_id=device_id, expires_at=row["expires_at"], rotation=rotation
    )


_KEY_VALID_BEFORE_REGISTRATION = timedelta(days=1)
"""How long before its registration a key's signatures count (its ``valid_from``).

Not zero: a gateway's clock may run a little behind the cloud's, and a gateway may
sign (and keep in its outbox) readings between creating its key and the operator
registering it. Not open: the key did not exist before, so a message that claims an
older signing time (a clock reset to 1970, a forged date) is refused (``key_not_valid``).
"""


def _public_key(x: str) -> PublicKey:
    try:
        return PublicKey.from_b64url(x)
    except ValueError as exc:
        raise DeviceError(f"not an Ed25519 public key: {exc}") from None


async def _insert_key(conn: Conn, *, pk: int, key: PublicKey, source: str) -> None:
    cur = await conn.execute("SELECT device_pk FROM device_keys WHERE kid = %s", (key.kid,))
    row = await cur.fetchone()
    if row is not None:
        if row["device_pk"] == pk:
            raise KeyConflictError(f"key {key.kid} is already registered for this device")
        raise KeyConflictError(f"key {key.kid} belongs to another device")
    # Adding a key replaces the device's current keys: what they signed until now stays
    # valid, nothing they sign from now on is.
    await conn.execute(
        "UPDATE device_keys SET valid_until = now()"
        " WHERE device_pk = %s AND revoked_at IS NULL"
        " AND (valid_until IS NULL OR valid_until > now())",
        (pk,),
    )
    await conn.execute(
        "INSERT INTO device_keys (kid, device_pk, public_key, source, valid_from)"
        " VALUES (%s, %s, %s, %s, now() - %s)",
        (key.kid, pk, key.raw, source, _KEY_VALID_BEFORE_REGISTRATION),
    )


async def enrol(
    conn: Conn, *, token: str, public_key: str, device_id: str | None = None
) -> DeviceKeyInfo:
    """Use a one-time token to register the gateway's public key (base64url ``x``).

    EnrolmentError when the token is unknown, used, revoked (a newer one was
    issued, or a key registered), expired or (with ``device_id``) issued for
    another device; HasKeyError when the device has a current key and the token
    is not a rotation; DeviceError when the key is not an Ed25519 key or belongs
    to another device. A refused enrolment changes nothing; a successful one
    uses this token and voids every other token of the device.
    """
    key = _public_key(public_key)
    token_hash = _hash_token(token)
    refused = EnrolmentError(
        "the enrolment token is unknown, already used, replaced by a newer one or expired"
    )
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT d.device_id FROM enrolment_tokens t JOIN devices d ON d.id = t.device_pk"
            " WHERE t.token_hash = %s",
            (token_hash,),
        )
        found = await cur.fetchone()
        if found is None:
            raise refused
        if device_id is not None and found["device_id"] != device_id:
            raise EnrolmentError(f"the enrolment token is not for device {device_id!r}")
        # Lock the device, then judge the token as it is once every earlier enrolment
        # or issue of this device has committed (each statement sees the latest commits).
        pk = await _lock_device(conn, found["device_id"])
        cur = await conn.execute(
            "UPDATE enrolment_tokens SET used_at = now(), used_kid = %s"
            " WHERE token_hash = %s AND device_pk = %s AND used_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > now()"
            " RETURNING rotation",
            (key.kid, token_hash, pk),
        )
        row = await cur.fetchone()
        if row is None:
            raise refused
        if not row["rotation"] and await _has_current_key(conn, pk):
            raise HasKeyError(_rotation_hint(found["device_id"]))
        await _void_tokens(conn, pk)
        await _insert_key(conn, pk=pk, key=key, source="enrolment")
    return await _key(conn, key.kid)


async def add_key(conn: Conn, *, device_id: str, public_key: str) -> DeviceKeyInfo:
    """Register a key directly (operator); it replaces the device's current keys.

    The device's unused enrolment tokens stop working: the operator chose this key.
    """
    key = _public_key(public_key)
    async with conn.transaction():
        pk = await _lock_device(conn, device_id)
        await _void_tokens(conn, pk)
        await _insert_key(conn, pk=pk, key=key, source="operator")
    return await _key(conn, key.kid)


rotate_key = add_key
"""Rotation is registering the new key: the old one stops being valid for new signatures."""


async def revoke_key(
    conn: Conn, *, kid: str, at: datetime | None = None, reason: str | None = None
) -> DeviceKeyInfo:
    """Refuse every message the key signed from ``at`` on (default: now).

    Set ``at`` to the suspected time of compromise: a stolen key can sign any
    time, so only the operator can say from when its signatures mean nothing.
    """
    cur = await conn.execute(
        "UPDATE device_keys SET revoked_at = COALESCE(%s, now()), revoked_reason = %s"
        " WHERE kid = %s RETURNING kid",
        (at, reason, kid),
    )
    if await cur.fetchone() is None:
        raise NotFoundError(f"no key {kid!r}")
    return await _key(conn, kid)


# in_calendar (migration 0033): a stored time Python cannot represent must not break
# the device's key list.
_SELECT_KEY = """
SELECT k.kid, d.device_id, k.public_key, in_calendar(k.valid_from) AS valid_from,
       in_calendar(k.valid_until) AS valid_until, in_calendar(k.revoked_at) AS revoked_at,
       k.source, k.created_at
FROM device_keys k JOIN devices d ON d.id = k.device_pk
"""


def _key_info(row: dict[str, Any]) -> DeviceKeyInfo:
    return DeviceKeyInfo(
        kid=row["kid"],
        device_id=row["device_id"],
        public_key=PublicKey(bytes(row["public_key"])).x,
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        revoked_at=row["revoked_at"],
        source=row["source"],
        created_at=row["created_at"],
    )


async def _key(conn: Conn, kid: str) -> DeviceKeyInfo:
    cur = await conn.execute(_SELECT_KEY + " WHERE k.kid = %s", (kid,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no key {kid!r}")
    return _key_info(row)


async def list_keys(conn: Conn, *, device_id: str) -> list[DeviceKeyInfo]:
    pk = await _device_pk(conn, device_id)
    cur = await conn.execute(_SELECT_KEY + " WHERE k.device_pk = %s ORDER BY k.created_at", (pk,))
    return [_key_info(row) for row in await cur.fetchall()]


_SELECT_DEVICE = """
SELECT d.id, d.device_id, d.name, s.name AS site, d.created_at,
       (SELECT count(*) FROM device_keys k WHERE k.device_pk = d.id AND k.revoked_at IS NULL
          AND (k.valid_until IS NULL OR k.valid_until > now())) AS active_keys,
       st.state, st.reported_at AS status_at, st.outbox_depth,
       last.seq AS last_seq, last.received_at AS last_message_at,
       (SELECT count(*) FROM raw_messages r
          WHERE r.device_pk = d.id AND r.chain = 'gap') AS chain_gaps,
       (SELECT count(*) FROM raw_messages r
          WHERE r.device_pk = d.id AND r.chain = 'broken') AS chain_breaks
FROM devices d
LEFT JOIN sites s ON s.id = d.site_id
LEFT JOIN device_status st ON st.device_pk = d.id
LEFT JOIN LATERAL (SELECT r.seq, r.received_at FROM raw_messages r
                   WHERE r.device_pk = d.id ORDER BY r.seq DESC LIMIT 1) last ON true
"""


def _device(row: dict[str, Any]) -> Device:
    return Device(
        id=row["id"],
        device_id=row["device_id"],
        name=row["name"],
        site=row["site"],
        created_at=row["created_at"],
        active_keys=int(row["active_keys"]),
        state=row["state"],
        status_at=row["status_at"],
        last_seq=row["last_seq"],
        last_message_at=row["last_message_at"],
        chain_gaps=int(row["chain_gaps"]),
        chain_breaks=int(row["chain_breaks"]),
        outbox_depth=row["outbox_depth"],
    )


async def get_device(conn: Conn, device_id: str) -> Device:
    cur = await conn.execute(_SELECT_DEVICE + " WHERE d.device_id = %s", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no device {device_id!r}")
    return _device(row)


async def list_devices(conn: Conn, *, limit: int = 100, offset: int = 0) -> list[Device]:
    cur = await conn.execute(
        _SELECT_DEVICE + " ORDER BY d.device_id LIMIT %s OFFSET %s", (limit, offset)
    )
    return [_device(row) for row in await cur.fetchall()]


_SELECT_METER = """
SELECT m.id, d.device_id, m.name, m.serial, m.model, m.owner_id, m.role, m.created_at,
       r.ts AS last_reading_at, r.import_wh, r.export_wh, r.power_w
FROM meters m
JOIN devices d ON d.id = m.device_pk
LEFT JOIN LATERAL (SELECT ts, import_wh, export_wh, power_w FROM readings
                   WHERE meter_id = m.id ORDER BY ts DESC LIMIT 1) r ON true
"""


def _meter(row: dict[str, Any]) -> Meter:
    return Meter(
        id=row["id"],
        device_id=row["device_id"],
        name=row["name"],
        serial=row["serial"],
        model=row["model"],
        owner_id=row["owner_id"],
        role=MeterRole(row["role"]),
        created_at=row["created_at"],
        last_reading_at=row["last_reading_at"],
        import_wh=row["import_wh"],
        export_wh=row["export_wh"],
        power_w=row["power_w"],
    )


async def get_meter(conn: Conn, meter_id: int) -> Meter:
    cur = await conn.execute(_SELECT_METER + " WHERE m.id = %s", (meter_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no meter {meter_id}")
    return _meter(row)


async def list_meters(
    conn: Conn,
    *,
    owner_id: int | None = None,
    device_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Meter]:
    """Meters, optionally only those of one owner or one device, by id."""
    cur = await conn.execute(
        _SELECT_METER + " WHERE (%(owner)s::bigint IS NULL OR m.owner_id = %(owner)s)"
        " AND (%(device)s::text IS NULL OR d.device_id = %(device)s)"
        " ORDER BY m.id LIMIT %(limit)s OFFSET %(offset)s",
        {"owner": owner_id, "device": device_id, "limit": limit, "offset": offset},
    )
    return [_meter(row) for row in await cur.fetchall()]


async def bind_meter(
    conn: Conn,
    *,
    device_id: str,
    name: str,
    owner_id: int | None,
    role: MeterRole,
    serial: str | None = None,
    model: str | None = None,
) -> Meter:
    """Create or update the meter ``name`` behind ``device_id``: its owner, role, serial, model.

    A meter that already sent readings exists already (created on its first
    reading); binding it keeps its readings.
    """
    pk = await _device_pk(conn, device_id)
    try:
        cur = await conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role, serial, model)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (device_pk, name) DO UPDATE SET owner_id = EXCLUDED.owner_id,"
            " role = EXCLUDED.role, serial = COALESCE(EXCLUDED.serial, meters.serial),"
            " model = COALESCE(EXCLUDED.model, meters.model), updated_at = now()"
            " RETURNING id",
            (pk, name, owner_id, role, serial, model),
        )
    except psycopg.errors.ForeignKeyViolation:
        raise NotFoundError(f"no user {owner_id}") from None
    except psycopg.errors.CheckViolation as exc:
        raise DeviceError(f"meter name {name!r} is not valid: {exc}") from None
    row = await cur.fetchone()
    assert row is not None
    return await get_meter(conn, row["id"])


async def quarantine_stats(conn: Conn, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Refused messages by reason: ``reason``, ``count``, ``last_at``, newest reason first."""
    cur = await conn.execute(
        "SELECT reason, count(*) AS count, max(received_at) AS last_at FROM quarantine"
        " WHERE %(since)s::timestamptz IS NULL OR received_at >= %(since)s"
        " GROUP BY reason ORDER BY max(received_at) DESC",
        {"since": since},
    )
    return [dict(row) for row in await cur.fetchall()]
