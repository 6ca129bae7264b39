"""``/api/auth``: wallet sign-in (the seed's paths and shapes), passwords, tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request, status

from gridclear.cloud.api.deps import (
    API_GROUP,
    CurrentPrincipal,
    CurrentSession,
    ServicesDep,
    auth_failure,
    client_ip,
    hit_limit,
    hit_limits,
    rate_limit,
)
from gridclear.cloud.api.envelope import Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import (
    access_changed,
    audit,
    audit_in,
    check_wallet_proof,
    mail_link,
    new_session,
    session_out,
)
from gridclear.cloud.api.schemas import (
    ChallengeOut,
    EmailIn,
    InitIn,
    LinkAcceptedOut,
    LinkTokenIn,
    LoggedOutOut,
    LoginIn,
    PasswordChangeIn,
    PasswordResetIn,
    RefreshIn,
    RegisterIn,
    SessionOut,
    UserOut,
    ValidateOut,
    VerifyIn,
)
from gridclear.cloud.audit import AuditEvent
from gridclear.cloud.identity import account_links, accounts, sessions
from gridclear.cloud.identity.nonces import Challenge
from gridclear.cloud.identity.siws import build_message, is_solana_address, new_nonce

__all__ = [
    "auth_profile",
    "change_password",
    "init_sign_in",
    "issue_challenge",
    "login",
    "logout",
    "refresh",
    "register",
    "request_password_reset",
    "reset_password",
    "router",
    "sign_in_router",
    "validate",
    "verify_email",
    "verify_sign_in",
]

router = APIRouter(prefix="/api/auth", tags=["auth"])
sign_in_router = APIRouter(prefix="/api/auth", tags=["auth"])
"""``init`` and ``verify``: included without the per-address ``api`` dependency, because
they count the address in ``api`` themselves, in the same Redis round trip as their
other limits."""

_LIMITED = error_responses(ErrorCode.VALIDATION_ERROR, ErrorCode.RATE_LIMIT_EXCEEDED)
_AUTHED = error_responses(
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)
_SESSION_ONLY = error_responses(
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)


async def _sign_in_limits(services: ServicesDep, request: Request, account_key: str) -> None:
    """``api`` and ``auth`` (per client address) and ``account`` (per wallet) at once.

    One Redis round trip for the three: sign-in is the busiest route without a token.
    """
    address = client_ip(request)
    await hit_limits(services, (API_GROUP, address), ("auth", address), ("account", account_key))
    request.state.api_counted = True


@sign_in_router.post(
    "/init",
    summary="Start a wallet sign-in: get the message to sign",
    responses=_LIMITED,
)
async def init_sign_in(body: InitIn, services: ServicesDep, request: Request) -> Ok[ChallengeOut]:
    """Issue a single-use Sign-In-With-Solana message for the wallet, valid for a few minutes.

    Limited per client address (``auth``) and per wallet (``account``).
    """
    if not is_solana_address(body.wallet_address):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "walletAddress is not a Solana address")
    await _sign_in_limits(services, request, f"wallet:{body.wallet_address}")
    return ok(await issue_challenge(services, address=body.wallet_address, purpose="sign-in"))


async def issue_challenge(
    services: ServicesDep,
    *,
    address: str,
    purpose: str,
    user_id: int | None = None,
    statement: str | None = None,
) -> ChallengeOut:
    settings = services.settings
    now = services.clock()
    expires = now + timedelta(seconds=settings.nonce_ttl_s)
    nonce = new_nonce()
    message = build_message(
        domain=settings.siws_domain,
        address=address,
        statement=statement or settings.siws_statement,
        uri=settings.siws_uri,
        chain_id=settings.siws_chain_id,
        nonce=nonce,
        issued_at=now,
        expires_at=expires,
    )
    await services.nonces.issue(
        Challenge(
            nonce=nonce,
            address=address,
            message=message,
            expires_at=expires.timestamp(),
            purpose="link" if purpose == "link" else "sign-in",
            user_id=user_id,
        )
    )
    return ChallengeOut(nonce=nonce, message=message, expires_at=expires)


@sign_in_router.post(
    "/verify",
    summary="Finish a wallet sign-in: send the signed message, get tokens",
    responses=error_responses(
        ErrorCode.INVALID_MESSAGE,
        ErrorCode.INVALID_SIGNATURE,
        ErrorCode.NONCE_INVALID,
        ErrorCode.NONCE_EXPIRED,
        ErrorCode.FORBIDDEN,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def verify_sign_in(body: VerifyIn, services: ServicesDep, request: Request) -> Ok[SessionOut]:
    """Check the message is exactly the one issued, unexpired, and signed by the wallet.

    The first sign-in of a wallet creates its account (role participant). The
    account, the session and the audit entry are written on one connection, the
    session and its entry in one transaction (one commit): this is the busiest
    write path of an unauthenticated client.
    """
    await _sign_in_limits(services, request, f"wallet:{body.wallet_address}")
    await check_wallet_proof(
        services,
        request,
        event=AuditEvent.WALLET_SIGN_IN,
        purpose="sign-in",
        address=body.wallet_address,
        message=body.message,
        signature=body.signature,
    )
    async with services.pool.connection() as conn:
        user, created = await accounts.user_for_wallet(conn, body.wallet_address)
        if user.disabled:
            await audit_in(
                conn,
                request,
                AuditEvent.WALLET_SIGN_IN,
                "failure",
                actor_id=user.id,
                subject=body.wallet_address,
                details={"reason": "disabled"},
            )
            raise auth_failure(services, ErrorCode.FORBIDDEN, "This account is disabled")
        # Pipeline mode: BEGIN, the session, the entry and COMMIT go in one round trip.
        async with conn.pipeline(), conn.transaction():
            session = await new_session(services, user, conn=conn)
            await audit_in(
                conn,
                request,
                AuditEvent.WALLET_SIGN_IN,
                "success",
                actor_id=user.id,
                subject=body.wallet_address,
                details={"created": created},
            )
    return ok(session)


@router.post(
    "/register",
    summary="Create a password account and sign in",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(rate_limit("auth")), Depends(rate_limit("register"))],
    responses=error_responses(
        ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR, ErrorCode.RATE_LIMIT_EXCEEDED
    ),
)
async def register(body: RegisterIn, services: ServicesDep, request: Request) -> Ok[SessionOut]:
    """409 when the email has an account: registration reveals that (docs/API.md, "Accounts").

    A new account is mailed a link that verifies its email (``/api/auth/email/verify``).

    So it is limited per client address by its own ``register`` group, and each such
    refusal is audited with the address, for operators to see a sweep of emails.
    The password is hashed either way, so both answers cost the same time.
    """
    password_hash = await services.passwords.hash(body.password)
    conflict: accounts.AccountConflictError | None = None
    async with services.pool.connection() as conn:
        try:
            user = await accounts.create_password_user(
                conn, email=body.email, password_hash=password_hash, display_name=body.display_name
            )
        except accounts.AccountConflictError as exc:
            conflict = exc
    if conflict is not None:
        await audit(
            services.pool,
            request,
            AuditEvent.REGISTER,
            "failure",
            actor_id=None,
            subject=body.email,
            details={"reason": "exists"},
        )
        raise ApiError(ErrorCode.CONFLICT, "An account with this email exists") from conflict
    assert user.email is not None
    async with services.pool.connection() as conn, conn.transaction():
        token = await account_links.issue_link(
            conn,
            user_id=user.id,
            purpose="verify_email",
            email=user.email,
            now=services.clock(),
            ttl=timedelta(seconds=services.settings.account_link_ttl_s),
        )
        await audit_in(
            conn, request, AuditEvent.REGISTER, "success", actor_id=user.id, subject=user.email
        )
    mail_link(services, to=user.email, purpose="verify_email", token=token)
    return ok(await new_session(services, user))


def _password_rate_key(user: accounts.User) -> str:
    """The ``account`` limit's key for guesses at this user's password (login's, by email)."""
    return f"email:{user.email}" if user.email is not None else f"user:{user.id}"


@router.post(
    "/login",
    summary="Sign in with email and password",
    dependencies=[Depends(rate_limit("auth"))],
    responses=error_responses(
        ErrorCode.INVALID_CREDENTIALS, ErrorCode.VALIDATION_ERROR, ErrorCode.RATE_LIMIT_EXCEEDED
    ),
)
async def login(body: LoginIn, services: ServicesDep, request: Request) -> Ok[SessionOut]:
    await hit_limit(services, "account", f"email:{body.email}")
    async with services.pool.connection() as conn:
        user = await accounts.get_user_by_email(conn, body.email)
        stored = await accounts.get_password_hash(conn, user.id) if user else None
    if not await services.passwords.verify(stored, body.password) or user is None or user.disabled:
        await audit(
            services.pool,
            request,
            AuditEvent.PASSWORD_SIGN_IN,
            "failure",
            actor_id=user.id if user else None,
            subject=body.email,
            details={"reason": "credentials"},
        )
        raise auth_failure(services, ErrorCode.INVALID_CREDENTIALS)
    if stored is not None and services.passwords.needs_rehash(stored):
        new_hash = await services.passwords.hash(body.password)
        async with services.pool.connection() as conn:
            await accounts.set_password_hash(conn, user_id=user.id, password_hash=new_hash)
    await audit(
        services.pool,
        request,
        AuditEvent.PASSWORD_SIGN_IN,
        "success",
        actor_id=user.id,
        subject=body.email,
    )
    return ok(await new_session(services, user))


@router.post(
    "/refresh",
    summary="Trade a refresh token for new tokens (the old one is used up)",
    dependencies=[Depends(rate_limit("auth"))],
    responses=error_responses(
        ErrorCode.INVALID_TOKEN,
        ErrorCode.REFRESH_TOKEN_REUSED,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def refresh(body: RefreshIn, services: ServicesDep, request: Request) -> Ok[SessionOut]:
    """Rotate: a refresh token works once. Presenting a used one revokes its whole session."""
    try:
        async with services.pool.connection() as conn:
            rotated = await sessions.rotate(
                conn,
                token=body.refresh_token,
                now=services.clock(),
                ttl=timedelta(seconds=services.settings.refresh_token_ttl_s),
            )
            user = await accounts.get_user(conn, rotated.user_id)
    except sessions.RefreshError as exc:
        if exc.reason == "reused" and exc.family_id is not None:
            await services.revocations.revoke(exc.family_id)
            await audit(
                services.pool,
                request,
                AuditEvent.REFRESH_REUSE,
                "failure",
                actor_id=exc.user_id,
                subject=str(exc.family_id),
                details={"revoked": "session"},
            )
            raise auth_failure(services, ErrorCode.REFRESH_TOKEN_REUSED) from exc
        raise auth_failure(
            services, ErrorCode.INVALID_TOKEN, f"The refresh token is {exc.reason}"
        ) from exc
    if user is None or user.disabled:
        raise auth_failure(services, ErrorCode.INVALID_TOKEN, "The account is not active")
    return ok(session_out(services, user, rotated.family_id, rotated.refresh_token))


@router.post(
    "/logout",
    summary="Revoke this session: its access and refresh tokens stop working",
    responses=_SESSION_ONLY,
)
async def logout(
    principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[LoggedOutOut]:
    assert principal.session_id is not None
    async with services.pool.connection() as conn:
        await sessions.revoke_family(conn, family_id=principal.session_id, now=services.clock())
    await services.revocations.revoke(principal.session_id)
    await access_changed(request, principal.user.id)
    await audit(
        services.pool,
        request,
        AuditEvent.LOGOUT,
        "success",
        actor_id=principal.user.id,
        subject=str(principal.session_id),
    )
    return ok(LoggedOutOut())


@router.get("/validate", summary="Check the presented token or API key", responses=_AUTHED)
async def validate(principal: CurrentPrincipal) -> Ok[ValidateOut]:
    return ok(
        ValidateOut(
            user_id=principal.user.id,
            role=principal.user.role,
            kind=principal.kind,
            scopes=sorted(principal.scopes),
            expires_at=principal.expires_at,
        )
    )


@router.get("/profile", summary="The signed-in user", responses=_AUTHED)
async def auth_profile(principal: CurrentPrincipal) -> Ok[UserOut]:
    return ok(UserOut.of(principal.user))


@router.put(
    "/password",
    summary="Change the password; other sessions are signed out",
    dependencies=[Depends(rate_limit("auth"))],
    responses=error_responses(
        ErrorCode.AUTHENTICATION_REQUIRED,
        ErrorCode.INVALID_TOKEN,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.INVALID_CREDENTIALS,
        ErrorCode.FORBIDDEN,
        ErrorCode.CONFLICT,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def change_password(
    body: PasswordChangeIn, principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    """Checks the current password: limited as login is, before any hash is computed.

    Per client address (``auth``) and per account (``account``, the budget login
    spends for the same email), so a stolen session cannot guess the password.
    """
    user = principal.user
    await hit_limit(services, "account", _password_rate_key(user))
    async with services.pool.connection() as conn:
        stored = await accounts.get_password_hash(conn, user.id)
    if stored is None:
        raise ApiError(ErrorCode.CONFLICT, "This account has no password; add one first")
    if not await services.passwords.verify(stored, body.current_password):
        await audit(
            services.pool,
            request,
            AuditEvent.PASSWORD_CHANGE,
            "failure",
            actor_id=user.id,
            details={"reason": "credentials"},
        )
        raise auth_failure(services, ErrorCode.INVALID_CREDENTIALS, "The current password is wrong")
    new_hash = await services.passwords.hash(body.new_password)
    async with services.pool.connection() as conn:
        await accounts.set_password_hash(conn, user_id=user.id, password_hash=new_hash)
        revoked = await sessions.revoke_user_sessions(
            conn, user_id=user.id, now=services.clock(), keep=principal.session_id
        )
    await services.revocations.revoke(*revoked)
    await access_changed(request, user.id)
    await audit(
        services.pool,
        request,
        AuditEvent.PASSWORD_CHANGE,
        "success",
        actor_id=user.id,
        details={"sessionsRevoked": len(revoked)},
    )
    return ok(UserOut.of(user))


# ---------------------------------------------------------------- mailed links

_LINK_ERRORS = {
    "unknown": ErrorCode.LINK_INVALID,
    "expired": ErrorCode.LINK_EXPIRED,
    "used": ErrorCode.LINK_USED,
}
_RESET_ANSWER = (
    "If an account has this email, a link to reset its password is on its way. "
    "It works once, for a limited time."
)


def _link_refused(exc: account_links.LinkRefusedError) -> ApiError:
    return ApiError(_LINK_ERRORS[exc.code], details={"reason": exc.code})


@router.post(
    "/password/reset-request",
    summary="Ask for a password-reset link by email (the answer never says if one was sent)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(ErrorCode.VALIDATION_ERROR, ErrorCode.RATE_LIMIT_EXCEEDED),
)
async def request_password_reset(
    body: EmailIn, services: ServicesDep, request: Request
) -> Ok[LinkAcceptedOut]:
    """The same 202 whether or not the email has an account, after the same work.

    Limited per client address (``auth``), per email (``account``) and per email
    for mail sent (``mail``), all counted before the account is looked up, so a
    429 says nothing either. The link goes out in the background after the
    commit, so the answer does not wait for the mail server. Disabled and
    deleted accounts get no link.
    """
    await hit_limits(
        services,
        ("auth", client_ip(request)),
        ("account", f"email:{body.email}"),
        ("mail", f"email:{body.email}"),
    )
    now = services.clock()
    ttl = timedelta(seconds=services.settings.account_link_ttl_s)
    token: str | None = None
    async with services.pool.connection() as conn, conn.transaction():
        user = await accounts.get_user_by_email(conn, body.email)
        if user is not None and not user.disabled:
            token = await account_links.issue_link(
                conn, user_id=user.id, purpose="reset_password", email=body.email, now=now, ttl=ttl
            )
        await audit_in(
            conn,
            request,
            AuditEvent.PASSWORD_RESET_REQUEST,
            "success" if token is not None else "failure",
            actor_id=user.id if user is not None else None,
            details={} if token is not None else {"reason": "no_active_account"},
        )
    if token is not None:
        mail_link(services, to=body.email, purpose="reset_password", token=token)
    return ok(LinkAcceptedOut(message=_RESET_ANSWER))


@router.post(
    "/password/reset",
    summary="Choose a new password with a mailed reset link; every session is signed out",
    responses=error_responses(
        ErrorCode.LINK_INVALID,
        ErrorCode.LINK_EXPIRED,
        ErrorCode.LINK_USED,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def reset_password(
    body: PasswordResetIn, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    """The link works once: the password, the link's use, the sessions' revocation and
    the audit entry commit together. Having read the mail also proves the address."""
    await hit_limit(services, "auth", client_ip(request))
    new_hash = await services.passwords.hash(body.new_password)
    now = services.clock()
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                used = await account_links.use_link(
                    conn, token=body.token, purpose="reset_password", now=now
                )
                await accounts.set_password_hash(conn, user_id=used.user_id, password_hash=new_hash)
                await accounts.mark_email_verified(conn, user_id=used.user_id, email=used.email)
                revoked = await sessions.revoke_user_sessions(conn, user_id=used.user_id, now=now)
                await audit_in(
                    conn,
                    request,
                    AuditEvent.PASSWORD_RESET,
                    "success",
                    actor_id=used.user_id,
                    subject=str(used.user_id),
                    details={"sessionsRevoked": len(revoked)},
                )
        except account_links.LinkRefusedError as exc:
            raise _link_refused(exc) from None
        user = await accounts.get_user(conn, used.user_id)
    assert user is not None
    await services.revocations.revoke(*revoked)
    await access_changed(request, user.id)
    return ok(UserOut.of(user))


@router.post(
    "/email/verify",
    summary="Confirm an email address with a mailed verification link",
    responses=error_responses(
        ErrorCode.LINK_INVALID,
        ErrorCode.LINK_EXPIRED,
        ErrorCode.LINK_USED,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    ),
)
async def verify_email(body: LinkTokenIn, services: ServicesDep, request: Request) -> Ok[UserOut]:
    """No sign-in needed: the link is the proof. It works once, and only while the
    address it was sent to is still the account's."""
    await hit_limit(services, "auth", client_ip(request))
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                used = await account_links.use_link(
                    conn, token=body.token, purpose="verify_email", now=services.clock()
                )
                await accounts.mark_email_verified(conn, user_id=used.user_id, email=used.email)
                await audit_in(
                    conn,
                    request,
                    AuditEvent.EMAIL_VERIFY,
                    "success",
                    actor_id=used.user_id,
                    subject=str(used.user_id),
                )
        except account_links.LinkRefusedError as exc:
            raise _link_refused(exc) from None
        user = await accounts.get_user(conn, used.user_id)
    assert user is not None
    return ok(UserOut.of(user))
