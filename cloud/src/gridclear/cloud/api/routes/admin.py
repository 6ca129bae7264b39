"""``/api/admin``: users, their roles and whether they are disabled, and the audit log
(admins only)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from gridclear.cloud.api.deps import Principal, ServicesDep, require_role
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import access_changed, audit
from gridclear.cloud.api.schemas import AuditEntryOut, IsoDatetime, RoleChangeIn, UserOut
from gridclear.cloud.audit import AuditEvent, query_audit
from gridclear.cloud.identity import accounts
from gridclear.cloud.identity.roles import Role

__all__ = ["AccountDisabledIn", "change_role", "list_users", "read_audit", "router", "set_disabled"]

router = APIRouter(prefix="/api/admin", tags=["admin"])

Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
    ErrorCode.VALIDATION_ERROR,
)
_MAX_ID = 2**63 - 1


@router.get("/users", summary="Every account, by id", responses=error_responses(*_AUTH))
async def list_users(
    admin: Admin,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Ok[list[UserOut]]:
    async with services.pool.connection() as conn:
        users = await accounts.list_users(conn, limit=limit, offset=offset)
    return ok([UserOut.of(u) for u in users])


@router.put(
    "/users/{user_id}/role",
    summary="Change a user's role",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
)
async def change_role(
    user_id: int, body: RoleChangeIn, admin: Admin, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    """The last active admin cannot be demoted (someone must be able to undo mistakes)."""
    if not 0 < user_id <= _MAX_ID:
        raise ApiError(ErrorCode.NOT_FOUND, "No such user")
    async with services.pool.connection() as conn:
        try:
            previous = await accounts.set_role(conn, user_id=user_id, role=body.role)
        except accounts.LastAdminError as exc:
            raise ApiError(
                ErrorCode.CONFLICT, "This is the last admin; promote another first"
            ) from exc
        if previous is None:
            raise ApiError(ErrorCode.NOT_FOUND, "No such user")
        updated = await accounts.get_user(conn, user_id)
    assert updated is not None
    await audit(
        services.pool,
        request,
        AuditEvent.ROLE_CHANGE,
        "success",
        actor_id=admin.user.id,
        subject=str(user_id),
        details={"from": previous.value if previous else None, "to": body.role.value},
    )
    return ok(UserOut.of(updated))


@router.get(
    "/audit",
    summary="The audit log, newest first",
    responses=error_responses(*_AUTH),
)
async def read_audit(
    *,
    admin: Admin,
    services: ServicesDep,
    event: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: Annotated[int | None, Query(alias="actorId", ge=1, le=_MAX_ID)] = None,
    outcome: Literal["success", "failure"] | None = None,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
    before_id: Annotated[int | None, Query(alias="beforeId", ge=1, le=_MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Ok[list[AuditEntryOut]]:
    """Filter by event name, actor, outcome and time; page with ``beforeId``."""
    async with services.pool.connection() as conn:
        entries = await query_audit(
            conn,
            event=event,
            actor_id=actor_id,
            outcome=outcome,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
    return ok([AuditEntryOut.of(e) for e in entries])


class AccountDisabledIn(ApiModel):
    disabled: Annotated[bool, Field(strict=True)]
    """True disables the account, false enables it again."""


@router.put(
    "/users/{user_id}/disabled",
    summary="Disable or enable an account (a disabled one is signed out everywhere)",
    responses=error_responses(*_AUTH, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
)
async def set_disabled(
    user_id: int, body: AccountDisabledIn, admin: Admin, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    """A disabled account's tokens, API keys and real-time connections stop working at once
    (its sessions are not revoked: enabled again, it signs in anew). The last active
    admin cannot be disabled."""
    if not 0 < user_id <= _MAX_ID:
        raise ApiError(ErrorCode.NOT_FOUND, "No such user")
    async with services.pool.connection() as conn:
        try:
            previous = await accounts.set_disabled(conn, user_id=user_id, disabled=body.disabled)
        except accounts.LastAdminError:
            raise ApiError(
                ErrorCode.CONFLICT, "This is the last admin; promote another first"
            ) from None
        updated = await accounts.get_user(conn, user_id)
    if previous is None or updated is None:
        raise ApiError(ErrorCode.NOT_FOUND, "No such user")
    if body.disabled:
        await access_changed(request, user_id)
    await audit(
        services.pool,
        request,
        AuditEvent.ACCOUNT_DISABLE if body.disabled else AuditEvent.ACCOUNT_ENABLE,
        "success",
        actor_id=admin.user.id,
        subject=str(user_id),
        details={"wasDisabled": previous},
    )
    return ok(UserOut.of(updated))
