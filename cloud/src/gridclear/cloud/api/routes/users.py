"""``/api/users``: the signed-in user's profile, wallets and credentials."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from gridclear.cloud.api.deps import (
    CurrentPrincipal,
    CurrentSession,
    ServicesDep,
    hit_limit,
    request_id,
)
from gridclear.cloud.api.envelope import Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import (
    access_changed,
    audit,
    audit_in,
    check_wallet_proof,
    mail_link,
)
from gridclear.cloud.api.routes.auth import issue_challenge
from gridclear.cloud.api.schemas import (
    AccountDeletedOut,
    ChallengeOut,
    CredentialsIn,
    InitIn,
    LinkAcceptedOut,
    ProfileUpdateIn,
    UserOut,
    VerifyIn,
)
from gridclear.cloud.audit import AuditEvent, record_audit
from gridclear.cloud.identity import account_links, accounts
from gridclear.cloud.identity.siws import is_solana_address
from gridclear.cloud.market import accounts as market_accounts

__all__ = [
    "add_credentials",
    "delete_me",
    "get_profile",
    "link_wallet",
    "put_profile",
    "router",
    "send_verification",
    "unlink_wallet",
    "wallet_challenge",
]

router = APIRouter(prefix="/api/users", tags=["users"])

_AUTH = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.RATE_LIMIT_EXCEEDED,
)


async def _reload(services: ServicesDep, user_id: int) -> UserOut:
    async with services.pool.connection() as conn:
        user = await accounts.get_user(conn, user_id)
    if user is None:
        raise ApiError(ErrorCode.NOT_FOUND, "No such user")
    return UserOut.of(user)


@router.get("/profile", summary="The signed-in user's profile", responses=error_responses(*_AUTH))
async def get_profile(principal: CurrentPrincipal) -> Ok[UserOut]:
    return ok(UserOut.of(principal.user))


@router.put(
    "/profile",
    summary="Update the profile (display name)",
    responses=error_responses(*_AUTH, ErrorCode.FORBIDDEN, ErrorCode.VALIDATION_ERROR),
)
async def put_profile(
    body: ProfileUpdateIn, principal: CurrentSession, services: ServicesDep
) -> Ok[UserOut]:
    async with services.pool.connection() as conn:
        await accounts.update_profile(
            conn, user_id=principal.user.id, display_name=body.display_name
        )
    return ok(await _reload(services, principal.user.id))


@router.post(
    "/wallets/challenge",
    summary="Start linking a wallet: get the message to sign with it",
    responses=error_responses(*_AUTH, ErrorCode.FORBIDDEN, ErrorCode.VALIDATION_ERROR),
)
async def wallet_challenge(
    body: InitIn, principal: CurrentSession, services: ServicesDep
) -> Ok[ChallengeOut]:
    if not is_solana_address(body.wallet_address):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "walletAddress is not a Solana address")
    await hit_limit(services, "account", f"wallet:{body.wallet_address}")
    return ok(
        await issue_challenge(
            services,
            address=body.wallet_address,
            purpose="link",
            user_id=principal.user.id,
            statement=f"Link this wallet to gridclear account {principal.user.id}.",
        )
    )


@router.post(
    "/wallets",
    summary="Link a wallet to this account, proven by its signature",
    responses=error_responses(
        *_AUTH,
        ErrorCode.FORBIDDEN,
        ErrorCode.CONFLICT,
        ErrorCode.INVALID_MESSAGE,
        ErrorCode.INVALID_SIGNATURE,
        ErrorCode.NONCE_INVALID,
        ErrorCode.NONCE_EXPIRED,
        ErrorCode.VALIDATION_ERROR,
    ),
)
async def link_wallet(
    body: VerifyIn, principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    await hit_limit(services, "account", f"wallet:{body.wallet_address}")
    await check_wallet_proof(
        services,
        request,
        event=AuditEvent.WALLET_LINK,
        purpose="link",
        address=body.wallet_address,
        message=body.message,
        signature=body.signature,
        user_id=principal.user.id,
    )
    async with services.pool.connection() as conn:
        try:
            await accounts.link_wallet(conn, user_id=principal.user.id, address=body.wallet_address)
        except accounts.AccountConflictError as exc:
            raise ApiError(ErrorCode.CONFLICT, str(exc)) from exc
    await audit(
        services.pool,
        request,
        AuditEvent.WALLET_LINK,
        "success",
        actor_id=principal.user.id,
        subject=body.wallet_address,
    )
    return ok(await _reload(services, principal.user.id))


@router.post(
    "/credentials",
    summary="Add an email and password to a wallet account",
    responses=error_responses(
        *_AUTH, ErrorCode.FORBIDDEN, ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR
    ),
)
async def add_credentials(
    body: CredentialsIn, principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[UserOut]:
    if principal.user.email is not None:
        raise ApiError(ErrorCode.CONFLICT, "This account already has an email and password")
    password_hash = await services.passwords.hash(body.password)
    async with services.pool.connection() as conn:
        try:
            await accounts.add_credentials(
                conn, user_id=principal.user.id, email=body.email, password_hash=password_hash
            )
        except accounts.AccountConflictError as exc:
            raise ApiError(ErrorCode.CONFLICT, str(exc)) from exc
    await audit(
        services.pool,
        request,
        AuditEvent.CREDENTIALS_ADD,
        "success",
        actor_id=principal.user.id,
        subject=body.email,
    )
    return ok(await _reload(services, principal.user.id))


@router.post(
    "/email/verification",
    summary="Mail a new verification link to the account's email",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(*_AUTH, ErrorCode.FORBIDDEN, ErrorCode.CONFLICT),
)
async def send_verification(
    principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[LinkAcceptedOut]:
    """409 when the account has no email, or it is verified already. Limited per address
    (``mail``); a new link voids the earlier ones."""
    user = principal.user
    if user.email is None:
        raise ApiError(ErrorCode.CONFLICT, "This account has no email; add one first")
    if user.email_verified:
        raise ApiError(ErrorCode.CONFLICT, "This email is verified already")
    await hit_limit(services, "mail", f"email:{user.email}")
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
            conn,
            request,
            AuditEvent.EMAIL_VERIFY_REQUEST,
            "success",
            actor_id=user.id,
            subject=str(user.id),
        )
    mail_link(services, to=user.email, purpose="verify_email", token=token)
    return ok(LinkAcceptedOut(message=f"A verification link is on its way to {user.email}."))


@router.delete(
    "/wallets/{address}",
    summary="Unlink a wallet from this account",
    responses=error_responses(
        *_AUTH,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.LAST_SIGN_IN_METHOD,
        ErrorCode.UNSETTLED_TRADES,
    ),
)
async def unlink_wallet(
    address: Annotated[str, Path(min_length=1, max_length=64)],
    principal: CurrentSession,
    services: ServicesDep,
    request: Request,
) -> Ok[UserOut]:
    """Refused while the wallet is the account's only way in (no password:
    ``LAST_SIGN_IN_METHOD``), and while the account has trades not yet settled
    (``UNSETTLED_TRADES``: settlement pays the account's wallet)."""
    user_id = principal.user.id
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                await accounts.unlink_wallet(conn, user_id=user_id, address=address)
                pending = await market_accounts.unsettled_trades(conn, user_id=user_id)
                if pending:
                    raise ApiError(
                        ErrorCode.UNSETTLED_TRADES,
                        details={"unsettled": pending},
                    )
                await audit_in(
                    conn,
                    request,
                    AuditEvent.WALLET_UNLINK,
                    "success",
                    actor_id=user_id,
                    subject=address,
                )
        except accounts.WalletUnlinkError as exc:
            if exc.code == "not_linked":
                raise ApiError(ErrorCode.NOT_FOUND, "No such wallet on this account") from None
            raise ApiError(
                ErrorCode.LAST_SIGN_IN_METHOD,
                "Add an email and password (or another wallet) before unlinking this one",
            ) from None
    return ok(await _reload(services, user_id))


@router.delete(
    "/me",
    summary="Delete this account: personal data removed, settled records kept pseudonymous",
    responses=error_responses(
        *_AUTH, ErrorCode.FORBIDDEN, ErrorCode.CONFLICT, ErrorCode.UNSETTLED_TRADES
    ),
)
async def delete_me(
    principal: CurrentSession, services: ServicesDep, request: Request
) -> Ok[AccountDeletedOut]:
    """docs/PRIVACY.md says what is removed, what is kept and why. Refused while the
    account has trades not yet settled (``UNSETTLED_TRADES``), and for the last
    active admin (``CONFLICT``). Open orders before gate closure are cancelled;
    every session ends and real-time connections close."""
    user_id = principal.user.id
    now = services.clock()
    async with services.pool.connection() as conn:
        try:
            async with conn.transaction():
                pending = await market_accounts.unsettled_trades(conn, user_id=user_id)
                if pending:
                    raise ApiError(ErrorCode.UNSETTLED_TRADES, details={"unsettled": pending})
                deleted = await accounts.delete_account(conn, user_id=user_id, now=now)
                if deleted is None:
                    raise ApiError(ErrorCode.NOT_FOUND, "No such user")
                cancelled = await market_accounts.cancel_open_orders(
                    conn, user_id=user_id, actor_id=user_id, reason="account_deleted"
                )
                # Without the client address: the person's addresses are what is removed.
                await record_audit(
                    conn,
                    event=AuditEvent.ACCOUNT_DELETE,
                    outcome="success",
                    actor_id=user_id,
                    subject=str(user_id),
                    request_id=request_id(request),
                    details={
                        "cancelledOrders": cancelled,
                        "walletsUnlinked": len(deleted.wallets),
                        "sessionsRevoked": len(deleted.sessions),
                    },
                )
        except accounts.LastAdminError:
            raise ApiError(
                ErrorCode.CONFLICT, "This is the last admin; promote another first"
            ) from None
    await services.revocations.revoke(*deleted.sessions)
    await access_changed(request, user_id)
    return ok(AccountDeletedOut(user_id=user_id, cancelled_orders=cancelled))
