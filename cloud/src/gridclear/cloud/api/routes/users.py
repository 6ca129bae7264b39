"""``/api/users``: the signed-in user's profile, wallets and credentials."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gridclear.cloud.api.deps import CurrentPrincipal, CurrentSession, ServicesDep, hit_limit
from gridclear.cloud.api.envelope import Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._common import audit, check_wallet_proof
from gridclear.cloud.api.routes.auth import issue_challenge
from gridclear.cloud.api.schemas import (
    ChallengeOut,
    CredentialsIn,
    InitIn,
    ProfileUpdateIn,
    UserOut,
    VerifyIn,
)
from gridclear.cloud.audit import AuditEvent
from gridclear.cloud.identity import accounts
from gridclear.cloud.identity.siws import is_solana_address

__all__ = [
    "add_credentials",
    "get_profile",
    "link_wallet",
    "put_profile",
    "router",
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
