"""``/api/devices``: gateways, enrolment, keys, meter binding, quarantine statistics.

Everything here is for operators and admins (signed in; API keys are refused),
except ``POST /api/devices/enroll``, which a gateway calls with its one-time
enrolment token (the token is the credential).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import Field

from gridclear.cloud import devices
from gridclear.cloud.api.deps import Principal, ServicesDep, rate_limit, require_role
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes.meters import MeterOut
from gridclear.cloud.api.schemas import IsoDatetime
from gridclear.cloud.identity.roles import Role
from gridclear.shared.topics import DEVICE_ID_PATTERN

__all__ = [
    "DeviceCreateIn",
    "DeviceCreatedOut",
    "DeviceOut",
    "EnrollIn",
    "KeyIn",
    "KeyOut",
    "MeterBindIn",
    "QuarantineStatOut",
    "RevokeIn",
    "TokenIn",
    "TokenOut",
    "bind_meter",
    "create_device",
    "enroll",
    "get_device",
    "list_devices",
    "list_keys",
    "new_token",
    "quarantine_stats",
    "revoke_key",
    "rotate_key",
    "router",
]

router = APIRouter(tags=["devices"])

Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR, Role.ADMIN))]

_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)
DeviceId = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$")]
PublicKeyX = Annotated[str, Field(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]+$")]


class DeviceOut(ApiModel):
    device_id: str
    name: str | None
    site: str | None
    created_at: datetime
    active_keys: int
    state: str | None
    status_at: datetime | None
    last_seq: int | None
    last_message_at: datetime | None
    chain_gaps: int
    """Messages whose predecessor has not arrived (a gap in the sequence)."""
    chain_breaks: int
    """Messages whose ``prev`` is not the stored predecessor's digest."""
    outbox_depth: int | None

    @classmethod
    def of(cls, device: devices.Device) -> DeviceOut:
        data = {k: v for k, v in vars(device).items() if k != "id"}
        return cls(**data)


class DeviceCreateIn(ApiModel):
    device_id: DeviceId
    name: Annotated[str | None, Field(max_length=200)] = None
    site: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    public_key: PublicKeyX | None = None
    """Register this key directly instead of issuing an enrolment token."""
    token_ttl_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0


class TokenOut(ApiModel):
    token: str
    """Shown once: only its hash is kept."""
    expires_at: datetime
    rotate: bool = False
    """The token may replace the device's current key (a rotation)."""


class DeviceCreatedOut(ApiModel):
    device: DeviceOut
    enrollment: TokenOut | None
    key: KeyOut | None


class TokenIn(ApiModel):
    token_ttl_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0
    rotate: bool = False
    """Let the gateway enrol a new key in place of its current one (a rotation). Without
    it, a device that already has a current key gets no token (409 CONFLICT)."""


class EnrollIn(ApiModel):
    token: Annotated[str, Field(min_length=10, max_length=200)]
    public_key: PublicKeyX
    """The gateway's Ed25519 public key, base64url (the JWK ``x``)."""
    device_id: DeviceId | None = None
    """When given, the token must have been issued for this device."""


class KeyOut(ApiModel):
    kid: str
    device_id: str
    public_key: str
    valid_from: datetime | None
    valid_until: datetime | None
    revoked_at: datetime | None
    source: str
    created_at: datetime

    @classmethod
    def of(cls, key: devices.DeviceKeyInfo) -> KeyOut:
        return cls(**vars(key))


class KeyIn(ApiModel):
    public_key: PublicKeyX


class RevokeIn(ApiModel):
    at: IsoDatetime | None = None
    """Refuse what the key signed from this time on (default: now)."""
    reason: Annotated[str | None, Field(max_length=500)] = None


class MeterBindIn(ApiModel):
    owner_id: Annotated[int | None, Field(gt=0, lt=2**63)] = None
    role: devices.MeterRole = devices.MeterRole.IMPORT
    serial: Annotated[str | None, Field(max_length=100)] = None
    model: Annotated[str | None, Field(max_length=100)] = None


class QuarantineStatOut(ApiModel):
    reason: str
    count: int
    last_at: datetime


DeviceCreatedOut.model_rebuild()


def _refusal(error: devices.DeviceError) -> ApiError:
    if isinstance(error, devices.NotFoundError):
        return ApiError(ErrorCode.NOT_FOUND, str(error))
    if isinstance(
        error, devices.DeviceExistsError | devices.KeyConflictError | devices.HasKeyError
    ):
        return ApiError(ErrorCode.CONFLICT, str(error))
    return ApiError(ErrorCode.VALIDATION_ERROR, str(error))


@router.post(
    "/api/devices",
    summary="Register a gateway; answers a one-time enrolment token (or registers publicKey)",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*_AUTH, ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR),
)
async def create_device(
    body: DeviceCreateIn, principal: Operator, services: ServicesDep
) -> Ok[DeviceCreatedOut]:
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                await devices.create_device(
                    conn,
                    device_id=body.device_id,
                    name=body.name,
                    site=body.site,
                    created_by=principal.user.id,
                )
                key = token = None
                if body.public_key is not None:
                    key = await devices.add_key(
                        conn, device_id=body.device_id, public_key=body.public_key
                    )
                else:
                    token = await devices.issue_enrolment_token(
                        conn,
                        device_id=body.device_id,
                        ttl=timedelta(hours=body.token_ttl_hours),
                    )
            device = await devices.get_device(conn, body.device_id)
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(
        DeviceCreatedOut(
            device=DeviceOut.of(device),
            enrollment=TokenOut(token=token.token, expires_at=token.expires_at) if token else None,
            key=KeyOut.of(key) if key else None,
        )
    )


@router.post(
    "/api/devices/enroll",
    summary="A gateway enrols its public key with a one-time token",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(rate_limit("enroll"))],
    responses=error_responses(
        ErrorCode.INVALID_TOKEN,
        ErrorCode.CONFLICT,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def enroll(body: EnrollIn, services: ServicesDep, request: Request) -> Ok[KeyOut]:
    async with services.pool.connection() as conn:
        try:
            key = await devices.enrol(
                conn, token=body.token, public_key=body.public_key, device_id=body.device_id
            )
        except devices.EnrolmentError as exc:
            services.metrics.auth_failures.labels("ENROLMENT_REFUSED").inc()
            raise ApiError(ErrorCode.INVALID_TOKEN, str(exc)) from exc
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(KeyOut.of(key))


@router.get(
    "/api/devices",
    summary="Gateways with their status, last sequence number and hash-chain health",
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def list_devices(
    principal: Operator,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Ok[list[DeviceOut]]:
    async with services.pool.connection() as conn:
        found = await devices.list_devices(conn, limit=limit, offset=offset)
    return ok([DeviceOut.of(d) for d in found])


@router.get(
    "/api/devices/quarantine",
    summary="Refused messages by reason (default: the last 24 hours)",
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def quarantine_stats(
    principal: Operator,
    services: ServicesDep,
    since: Annotated[IsoDatetime | None, Query()] = None,
) -> Ok[list[QuarantineStatOut]]:
    since = since or datetime.now(UTC) - timedelta(days=1)
    async with services.pool.connection() as conn:
        rows: list[dict[str, Any]] = await devices.quarantine_stats(conn, since=since)
    return ok([QuarantineStatOut(**row) for row in rows])


@router.get(
    "/api/devices/{device_id}",
    summary="One gateway",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND),
)
async def get_device(device_id: str, principal: Operator, services: ServicesDep) -> Ok[DeviceOut]:
    async with services.pool.connection() as conn:
        try:
            return ok(DeviceOut.of(await devices.get_device(conn, device_id)))
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc


@router.post(
    "/api/devices/{device_id}/enrollment-token",
    summary="Issue a new one-time enrolment token; the device's earlier unused ones stop working",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        *_AUTH, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR
    ),
)
async def new_token(
    device_id: str, body: TokenIn, principal: Operator, services: ServicesDep
) -> Ok[TokenOut]:
    async with services.pool.connection() as conn:
        try:
            token = await devices.issue_enrolment_token(
                conn,
                device_id=device_id,
                ttl=timedelta(hours=body.token_ttl_hours),
                rotation=body.rotate,
            )
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(TokenOut(token=token.token, expires_at=token.expires_at, rotate=token.rotation))


@router.get(
    "/api/devices/{device_id}/keys",
    summary="A gateway's keys, current and retired",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND),
)
async def list_keys(device_id: str, principal: Operator, services: ServicesDep) -> Ok[list[KeyOut]]:
    async with services.pool.connection() as conn:
        try:
            keys = await devices.list_keys(conn, device_id=device_id)
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok([KeyOut.of(k) for k in keys])


@router.post(
    "/api/devices/{device_id}/keys",
    summary="Rotate: register a new key; earlier keys stay valid for what they signed before",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        *_AUTH, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR
    ),
)
async def rotate_key(
    device_id: str, body: KeyIn, principal: Operator, services: ServicesDep
) -> Ok[KeyOut]:
    async with services.pool.connection() as conn:
        try:
            key = await devices.rotate_key(conn, device_id=device_id, public_key=body.public_key)
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(KeyOut.of(key))


@router.post(
    "/api/devices/keys/{kid}/revoke",
    summary="Revoke a key: refuse everything it signed from a time on",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def revoke_key(
    kid: str, body: RevokeIn, principal: Operator, services: ServicesDep
) -> Ok[KeyOut]:
    async with services.pool.connection() as conn:
        try:
            # Written and read back in one transaction: a request that fails stores nothing.
            async with conn.transaction():
                key = await devices.revoke_key(conn, kid=kid, at=body.at, reason=body.reason)
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(KeyOut.of(key))


@router.put(
    "/api/devices/{device_id}/meters/{name}",
    summary="Bind a meter (by its name in the readings) to an owner and a role",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def bind_meter(
    device_id: str, name: str, body: MeterBindIn, principal: Operator, services: ServicesDep
) -> Ok[MeterOut]:
    async with services.pool.connection() as conn:
        try:
            meter = await devices.bind_meter(
                conn,
                device_id=device_id,
                name=name,
                owner_id=body.owner_id,
                role=body.role,
                serial=body.serial,
                model=body.model,
            )
        except devices.DeviceError as exc:
            raise _refusal(exc) from exc
    return ok(MeterOut.of(meter))
