"""``/api/admin``: users, their roles and whether they are disabled, and the audit log
(admins only)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from gridclear.cloud.api.deps import Principal, ServicesDep, require_role
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import access_changed, audit, audit_in
from gridclear.cloud.api.schemas import AuditEntryOut, IsoDatetime, RoleChangeIn, UserOut
from gridclear.cloud.audit import AuditEntry, AuditEvent, query_audit
from gridclear.cloud.identity import accounts, sessions
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.market import accounts as market_accounts

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


_AUDIT_HEADERS = {
    "X-Next-Cursor": {
        "description": "Pass as `cursor` for the next (older) page; absent on the last page",
        "schema": {"type": "string"},
    }
}


def _cursor(value: str | None) -> int | None:
    """The id a cursor stands for; 422 for one this API did not issue."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= _MAX_ID:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "cursor is not one this API issued")
    return int(value)


@router.get(
    "/audit",
    summary="Search the audit log, newest first (paged by cursor)",
    responses={
        200: {"description": "Entries, newest first", "headers": _AUDIT_HEADERS},
        **error_responses(*_AUTH),
    },
)
async def read_audit(
    *,
    admin: Admin,
    services: ServicesDep,
    response: Response,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            description="An action name (`order.cancel`), or a prefix ending in `.*` (`order.*`)",
        ),
    ] = None,
    actor: Annotated[int | None, Query(ge=1, le=_MAX_ID, description="Who acted")] = None,
    subject: Annotated[
        str | None, Query(max_length=256, description="What was acted on (an id, an address)")
    ] = None,
    from_: Annotated[
        IsoDatetime | None, Query(alias="from", description="At or after (RFC 3339)")
    ] = None,
    to: Annotated[IsoDatetime | None, Query(description="Before (RFC 3339)")] = None,
    cursor: Annotated[
        str | None, Query(max_length=20, description="`X-Next-Cursor` of the previous page")
    ] = None,
    outcome: Literal["success", "failure"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    event: Annotated[
        str | None, Query(max_length=64, deprecated=True, description="Old name of `action`")
    ] = None,
    actor_id: Annotated[
        int | None, Query(alias="actorId", ge=1, le=_MAX_ID, deprecated=True)
    ] = None,
    since: Annotated[IsoDatetime | None, Query(deprecated=True)] = None,
    until: Annotated[IsoDatetime | None, Query(deprecated=True)] = None,
    before_id: Annotated[
        int | None, Query(alias="beforeId", ge=1, le=_MAX_ID, deprecated=True)
    ] = None,
) -> Ok[list[AuditEntryOut]]:
    """Filter by action, actor, subject, outcome and time (``from`` inclusive, ``to``
    exclusive). A full page sets ``X-Next-Cursor``: pass it as ``cursor`` for the
    next, older, page. The action names are listed in docs/API.md ("Audit log")."""
    after_cursor = _cursor(cursor)
    entries: list[AuditEntry]
    async with services.pool.connection() as conn:
        entries = await query_audit(
            conn,
            event=action if action is not None else event,
            actor_id=actor if actor is not None else actor_id,
            subject=subject,
            outcome=outcome,
            since=from_ if from_ is not None else since,
            until=to if to is not None else until,
            before_id=after_cursor if after_cursor is not None else before_id,
            limit=limit,
        )
    if len(entries) == limit:
        response.headers["X-Next-Cursor"] = str(entries[-1].id)
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
    """Disabling is at once and complete: in one transaction the account is marked
    disabled, its sessions are revoked, its open orders in slots before gate
    closure are cancelled and the audit log says so; then its access tokens stop
    working (revocation marks) and its real-time connections are closed on every
    API instance. Its API keys, password and wallets stop working while it is
    disabled (every sign-in and key checks the account). Enabled again, it signs
    in anew. The last active admin cannot be disabled."""
    if not 0 < user_id <= _MAX_ID:
        raise ApiError(ErrorCode.NOT_FOUND, "No such user")
    revoked: list[uuid.UUID] = []
    cancelled: list[int] = []
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                previous = await accounts.set_disabled(
                    conn, user_id=user_id, disabled=body.disabled
                )
                if previous is None:
                    raise ApiError(ErrorCode.NOT_FOUND, "No such user")
                if body.disabled:
                    revoked = await sessions.revoke_user_sessions(
                        conn, user_id=user_id, now=services.clock()
                    )
                    cancelled = await market_accounts.cancel_open_orders(
                        conn, user_id=user_id, actor_id=admin.user.id, reason="account_disabled"
                    )
                await audit_in(
                    conn,
                    request,
                    AuditEvent.ACCOUNT_DISABLE if body.disabled else AuditEvent.ACCOUNT_ENABLE,
                    "success",
                    actor_id=admin.user.id,
                    subject=str(user_id),
                    details={
                        "wasDisabled": previous,
                        "sessionsRevoked": len(revoked),
                        "cancelledOrders": cancelled,
                    },
                )
        except accounts.LastAdminError:
            raise ApiError(
                ErrorCode.CONFLICT, "This is the last admin; promote another first"
            ) from None
        except accounts.AccountConflictError as exc:
            raise ApiError(ErrorCode.CONFLICT, str(exc)) from None
        updated = await accounts.get_user(conn, user_id)
    assert updated is not None
    if body.disabled:
        await services.revocations.revoke(*revoked)
        await access_changed(request, user_id)
    return ok(UserOut.of(updated))
