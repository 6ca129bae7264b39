"""Helpers the identity routes share: starting sessions, auditing, wallet proofs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Literal

from fastapi import Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.api.deps import auth_failure, client_ip, request_id
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.schemas import SessionOut, UserOut
from gridclear.cloud.api.services import Services
from gridclear.cloud.audit import AuditEvent, record_audit
from gridclear.cloud.identity import sessions
from gridclear.cloud.identity.account_links import LinkPurpose
from gridclear.cloud.identity.accounts import User
from gridclear.cloud.identity.mail import account_message
from gridclear.cloud.identity.nonces import Challenge
from gridclear.cloud.identity.siws import MessageFormatError, parse_message, verify_signature
from gridclear.cloud.realtime import EventPublisher
from gridclear.cloud.storage.pool import Pool

Conn = AsyncConnection[DictRow]

__all__ = [
    "access_changed",
    "audit",
    "audit_in",
    "check_wallet_proof",
    "mail_link",
    "new_session",
    "session_out",
]


async def audit_in(
    conn: Conn,
    request: Request,
    event: AuditEvent,
    outcome: Literal["success", "failure"],
    *,
    actor_id: int | None,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record on ``conn``: inside the action's transaction, it commits with the action."""
    await record_audit(
        conn,
        event=event,
        outcome=outcome,
        actor_id=actor_id,
        subject=subject,
        ip=client_ip(request),
        request_id=request_id(request),
        details=details,
    )


async def audit(
    pool: Pool,
    request: Request,
    event: AuditEvent,
    outcome: Literal["success", "failure"],
    *,
    actor_id: int | None,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record on a connection of its own: for refusals, which change nothing else."""
    async with pool.connection() as conn:
        await audit_in(
            conn,
            request,
            event,
            outcome,
            actor_id=actor_id,
            subject=subject,
            details=details,
        )


def session_out(
    services: Services, user: User, family_id: uuid.UUID, refresh_token: str
) -> SessionOut:
    access, _ = services.tokens.issue(user_id=user.id, role=user.role, session_id=family_id)
    return SessionOut(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=int(services.tokens.ttl.total_seconds()),
        user=UserOut.of(user),
    )


async def new_session(services: Services, user: User, *, conn: Conn | None = None) -> SessionOut:
    """Start a refresh-token family for ``user`` and issue its first tokens.

    On ``conn`` when given (inside the caller's transaction), else on a pooled one.
    """
    if conn is None:
        async with services.pool.connection() as own:
            return await new_session(services, user, conn=own)
    family_id, refresh = await sessions.start_session(
        conn,
        user_id=user.id,
        now=services.clock(),
        ttl=timedelta(seconds=services.settings.refresh_token_ttl_s),
    )
    return session_out(services, user, family_id, refresh)


_LINKS: dict[LinkPurpose, tuple[str, str, str]] = {
    "verify_email": (
        "Confirm your email address for gridclear",
        "verify-email",
        "Open this link to confirm that this address belongs to your gridclear account",
    ),
    "reset_password": (
        "Reset your gridclear password",
        "reset-password",
        "Open this link to choose a new password for your gridclear account",
    ),
}


def mail_link(services: Services, *, to: str, purpose: LinkPurpose, token: str) -> None:
    """Mail the link for ``token`` to ``to``, in the background (call after the commit)."""
    settings = services.settings
    subject, page, what = _LINKS[purpose]
    minutes = settings.account_link_ttl_s // 60
    link = f"{settings.link_base_url}/{page}?token={token}"
    body = (
        f"{what} (it works once, for {minutes} minutes):\n\n{link}\n\n"
        "If you did not ask for this, ignore this message: nothing changes.\n"
    )
    sender = settings.mail_from or f"gridclear <no-reply@{settings.siws_domain.split(':')[0]}>"
    services.mail.submit(account_message(sender=sender, to=to, subject=subject, body=body))


async def check_wallet_proof(
    services: Services,
    request: Request,
    *,
    event: AuditEvent,
    purpose: Literal["sign-in", "link"],
    address: str,
    message: str,
    signature: str,
    user_id: int | None = None,
) -> Challenge:
    """Check a signed challenge and use its nonce up; raises :class:`ApiError` if refused.

    Checks, in order: the message parses, its nonce was issued (and not used)
    for this purpose and account, for this address, names our domain, is the
    exact text issued, has not expired, and the wallet signed it. Only then is
    the nonce consumed, atomically: a refused attempt changes nothing.
    """

    async def refuse(code: ErrorCode, reason: str) -> ApiError:
        await audit(
            services.pool,
            request,
            event,
            "failure",
            actor_id=user_id,
            subject=address,
            details={"reason": reason, "code": code.value},
        )
        error = auth_failure(services, code)
        if code is ErrorCode.INVALID_MESSAGE:
            error.details = {"reason": reason}
        return error

    try:
        parsed = parse_message(message)
    except MessageFormatError as exc:
        raise await refuse(ErrorCode.INVALID_MESSAGE, "malformed") from exc
    challenge = await services.nonces.get(parsed.nonce)
    if challenge is None or challenge.purpose != purpose or challenge.user_id != user_id:
        raise await refuse(ErrorCode.NONCE_INVALID, "nonce")
    if challenge.address != address or parsed.address != address:
        raise await refuse(ErrorCode.INVALID_MESSAGE, "address")
    if parsed.domain != services.settings.siws_domain:
        raise await refuse(ErrorCode.INVALID_MESSAGE, "domain")
    if message != challenge.message:
        raise await refuse(ErrorCode.INVALID_MESSAGE, "altered")
    if services.clock().timestamp() >= challenge.expires_at:
        raise await refuse(ErrorCode.NONCE_EXPIRED, "expired")
    if not verify_signature(address=address, message=message, signature=signature):
        raise await refuse(ErrorCode.INVALID_SIGNATURE, "signature")
    if not await services.nonces.consume(challenge.nonce):
        raise await refuse(ErrorCode.NONCE_INVALID, "nonce")
    return challenge


async def access_changed(request: Request, user_id: int) -> None:
    """``user_id`` lost access (committed): every API instance rechecks their sockets now."""
    publisher = getattr(request.app.state, "events", None)
    if isinstance(publisher, EventPublisher):
        await publisher.access_changed(user_id)
