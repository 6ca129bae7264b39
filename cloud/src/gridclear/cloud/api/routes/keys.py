"""``/api/keys``: API keys for integrations (created by a signed-in user, never by a key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from gridclear.cloud.api.deps import CurrentSession, ServicesDep
from gridclear.cloud.api.envelope import Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import audit
from gridclear.cloud.api.schemas import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyOut
from gridclear.cloud.audit import AuditEvent
from gridclear.cloud.identity import keystore

__all__ = ["create_key", "list_keys", "revoke_key", "router"]

router = APIRouter(prefix="/api/keys", tags=["api keys"])

_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)


@router.post(
    "",
    summary="Create an API key (the key is shown in this answer only)",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*_AUTH, ErrorCode.VALIDATION_ERROR),
)
async def create_key(
    body: ApiKeyCreateIn, principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[ApiKeyCreatedOut]:
    now = services.clock()
    if body.expires_at is not None and body.expires_at <= now:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "expiresAt must be in the future")
    async with services.pool.connection() as conn:
        key, secret = await keystore.create_key(
            conn,
            user_id=principal.user.id,
            name=body.name,
            scopes=frozenset(body.scopes),
            expires_at=body.expires_at,
            now=now,
        )
    await audit(
        services.pool,
        request,
        AuditEvent.API_KEY_CREATE,
        "success",
        actor_id=principal.user.id,
        subject=str(key.id),
        details={"prefix": key.prefix, "scopes": sorted(key.scopes)},
    )
    return ok(ApiKeyCreatedOut(**ApiKeyOut.of(key).model_dump(), key=secret))


@router.get("", summary="This user's API keys (prefixes only)", responses=error_responses(*_AUTH))
async def list_keys(principal: CurrentSession, services: ServicesDep) -> Ok[list[ApiKeyOut]]:
    async with services.pool.connection() as conn:
        keys = await keystore.list_keys(conn, user_id=principal.user.id)
    return ok([ApiKeyOut.of(k) for k in keys])


@router.delete(
    "/{key_id}",
    summary="Revoke an API key (at once, for good)",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_ERROR),
)
async def revoke_key(
    key_id: int, principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[ApiKeyOut]:
    if not 0 < key_id < 2**63:
        raise ApiError(ErrorCode.NOT_FOUND, "No such API key")
    async with services.pool.connection() as conn:
        key = await keystore.revoke_key(
            conn, user_id=principal.user.id, key_id=key_id, now=services.clock()
        )
    if key is None:
        raise ApiError(ErrorCode.NOT_FOUND, "No such API key")
    await audit(
        services.pool,
        request,
        AuditEvent.API_KEY_REVOKE,
        "success",
        actor_id=principal.user.id,
        subject=str(key.id),
        details={"prefix": key.prefix},
    )
    return ok(ApiKeyOut.of(key))
