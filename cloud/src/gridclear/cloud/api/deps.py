"""FastAPI dependencies: services, the caller's identity, roles, scopes and rate limits.

How a caller is identified:

- ``Authorization: Bearer <access token>``: a signed-in session (all scopes).
- ``Authorization: Bearer gck_...`` or ``X-API-Key: gck_...``: an API key,
  limited to its scopes, and never allowed on account, key or admin routes.

Every refusal raises :class:`ApiError` with its code and counts the reason in
``gridclear_auth_failures``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request

from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.ratelimit import RateLimitExceededError
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity import accounts, keystore
from gridclear.cloud.identity.accounts import User
from gridclear.cloud.identity.apikeys import KEY_MARKER
from gridclear.cloud.identity.roles import Role, Scope
from gridclear.cloud.identity.tokens import AccessClaims, TokenError

__all__ = [
    "API_GROUP",
    "PUBLIC_GROUP",
    "CurrentPrincipal",
    "CurrentSession",
    "Principal",
    "ServicesDep",
    "auth_failure",
    "client_ip",
    "current_principal",
    "current_session",
    "get_services",
    "hit_limit",
    "hit_limits",
    "public_reader",
    "rate_limit",
    "request_id",
    "require_role",
    "require_scope",
    "services_of",
    "token_principal",
    "trading_user_id",
]

_BEARER = {"WWW-Authenticate": 'Bearer realm="gridclear"'}


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    """The dependency form of :func:`services_of`.

    async though it awaits nothing: FastAPI runs a plain ``def`` dependency in
    its thread pool, a thread hop on every request.
    """
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def client_ip(request: Request) -> str:
    """The client's address (uvicorn resolves trusted proxies' X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return str(value) if value else None


def auth_failure(services: Services, code: ErrorCode, message: str | None = None) -> ApiError:
    """Count an authentication failure and build its error."""
    services.metrics.auth_failures.labels(code.value).inc()
    headers = _BEARER if code.status == 401 else None
    return ApiError(code, message, headers=headers)


async def hit_limit(services: Services, group: str, key: str) -> None:
    """Count a request against ``group`` for ``key``; 429 with Retry-After past the limit."""
    try:
        await services.limiter.hit(group, key)
    except RateLimitExceededError as exc:
        raise _limited(services, exc.group, exc.retry_after_s) from exc


async def hit_limits(services: Services, *hits: tuple[str, str]) -> None:
    """Count one request per ``(group, key)`` in one Redis round trip; 429 past any limit."""
    admission = await services.limiter.admit(hits)
    if admission.limited_group is not None:
        raise _limited(services, admission.limited_group, admission.retry_after_s)


def _limited(services: Services, group: str, retry_after_s: int) -> ApiError:
    services.metrics.rate_limited.labels(group).inc()
    return ApiError(
        ErrorCode.RATE_LIMIT_EXCEEDED,
        details={"group": group, "retryAfter": retry_after_s},
        headers={"Retry-After": str(retry_after_s)},
    )


API_GROUP = "api"
"""The group every API request counts in, per client address, exactly once."""


def rate_limit(group: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency counting each request per client address in ``group``."""

    async def limit(request: Request) -> None:
        await hit_limit(services_of(request), group, client_ip(request))
        if group == API_GROUP:
            request.state.api_counted = True

    return limit


def _uncounted_client(request: Request) -> str | None:
    """The client address, if the request has not yet counted in the ``api`` group.

    Routers whose every route authenticates leave the per-address count to
    :func:`current_principal`, which makes it in the same Redis round trip as
    the identity's.
    """
    return None if getattr(request.state, "api_counted", False) else client_ip(request)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user: User
    kind: Literal["session", "api_key"]
    scopes: frozenset[Scope]
    session_id: uuid.UUID | None = None
    expires_at: datetime | None = None
    api_key_id: int | None = None

    @property
    def rate_key(self) -> str:
        return f"key:{self.api_key_id}" if self.kind == "api_key" else f"user:{self.user.id}"


def _credentials(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return ""
        return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key is not None else None


async def current_principal(request: Request) -> Principal:
    """The caller, or 401: no credentials, bad or expired token, revoked session, bad key.

    The identity's rate limit is counted here too (429 past it). Called again
    in the same request (directly or as a dependency), it answers from the first call.
    """
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    services = services_of(request)
    credentials = _credentials(request)
    if credentials is None:
        raise auth_failure(services, ErrorCode.AUTHENTICATION_REQUIRED)
    client = _uncounted_client(request)
    if credentials.startswith(KEY_MARKER):
        principal = await _key_principal(services, credentials)
        await _admit(services, principal.rate_key, client=client)
    else:
        principal = await token_principal(services, credentials, client=client)
    if client is not None:
        request.state.api_counted = True
    request.state.principal = principal
    return principal


async def _admit(
    services: Services, rate_key: str, *, client: str | None, revoked_key: str | None = None
) -> None:
    """One Redis round trip: the session not revoked, then the address and identity counted."""
    hits = [(API_GROUP, client)] if client is not None else []
    hits.append(("identity", rate_key))
    admission = await services.limiter.admit(hits, revoked_key=revoked_key)
    if admission.revoked:
        raise auth_failure(services, ErrorCode.INVALID_TOKEN, "The session has been revoked")
    if admission.limited_group is not None:
        raise _limited(services, admission.limited_group, admission.retry_after_s)


async def _admitted_claims(
    services: Services, token: str, *, client: str | None = None
) -> AccessClaims:
    """A valid access token of a live session; its identity (and ``client``) counted."""
    try:
        claims = services.tokens.verify(token)
    except TokenError as exc:
        code = ErrorCode.TOKEN_EXPIRED if exc.reason == "expired" else ErrorCode.INVALID_TOKEN
        raise auth_failure(services, code) from exc
    await _admit(
        services,
        f"user:{claims.user_id}",
        client=client,
        revoked_key=services.revocations.key(claims.session_id),
    )
    return claims


async def token_principal(
    services: Services, token: str, *, client: str | None = None
) -> Principal:
    """The session behind an access token, checked exactly as REST checks a bearer token.

    Signature, expiry, revoked session, disabled account and rate limits: any
    refusal raises :class:`ApiError` (``invalid_token``, ``token_expired``,
    ``rate_limited``) and counts it. The identity is counted against its rate
    limit, and ``client`` (an address) too when given. The real-time server
    calls it at connect, so a socket is admitted exactly when a request would be.
    """
    claims = await _admitted_claims(services, token, client=client)
    user = await services.users.get(claims.user_id)
    if user is None or user.disabled:
        raise auth_failure(services, ErrorCode.INVALID_TOKEN, "The account is not active")
    return Principal(
        user=user,
        kind="session",
        scopes=frozenset(Scope),
        session_id=claims.session_id,
        expires_at=claims.expires_at,
    )


async def _key_principal(services: Services, key: str) -> Principal:
    async with services.pool.connection() as conn:
        found = await keystore.authenticate_key(conn, key=key, now=services.clock())
        user = await accounts.get_user(conn, found.user_id) if found else None
    if found is None or user is None or user.disabled:
        raise auth_failure(services, ErrorCode.INVALID_TOKEN, "The API key is not valid")
    return Principal(
        user=user,
        kind="api_key",
        scopes=found.scopes,
        expires_at=found.expires_at,
        api_key_id=found.id,
    )


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

PUBLIC_GROUP = "public"
"""The group anonymous reads of public market data count in, per client address."""


async def public_reader(request: Request) -> Principal | None:
    """Public market data: anyone may read it.

    Without credentials the caller is None, counted per client address in the
    ``public`` group (besides ``api``, which the router counts). Credentials that
    are sent are checked exactly as elsewhere (a bad token is still 401, an API
    key needs ``read`` or ``trading``), so a client learns of a broken token.
    """
    if _credentials(request) is None:
        await hit_limit(services_of(request), PUBLIC_GROUP, client_ip(request))
        return None
    principal = await current_principal(request)
    return _scoped(request, principal, frozenset({Scope.READ, Scope.TRADING}))


async def current_session(principal: CurrentPrincipal, request: Request) -> Principal:
    """A signed-in user; API keys are refused (403) on account, key and admin routes."""
    if principal.kind != "session":
        raise auth_failure(
            services_of(request), ErrorCode.FORBIDDEN, "This route needs a signed-in user"
        )
    return principal


CurrentSession = Annotated[Principal, Depends(current_session)]


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting signed-in users whose role is one of ``roles`` (else 403)."""
    allowed = frozenset(roles)

    # The principal is resolved inside rather than as a sub-dependency: each
    # level of FastAPI's dependency tree costs time on every request.
    async def check(request: Request) -> Principal:
        principal = await current_session(await current_principal(request), request)
        if principal.user.role not in allowed:
            raise auth_failure(
                services_of(request),
                ErrorCode.FORBIDDEN,
                f"This route needs the role {' or '.join(sorted(allowed))}",
            )
        return principal

    return check


def require_scope(*any_of: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting sessions, and API keys holding one of ``any_of``."""
    wanted = frozenset(any_of)

    async def check(request: Request) -> Principal:
        return _scoped(request, await current_principal(request), wanted)

    return check


def _scoped(request: Request, principal: Principal, wanted: frozenset[Scope]) -> Principal:
    if not principal.scopes & wanted:
        raise auth_failure(
            services_of(request),
            ErrorCode.FORBIDDEN,
            f"This API key lacks the scope {' or '.join(sorted(wanted))}",
        )
    return principal


async def trading_user_id(request: Request) -> int:
    """Who places an order: a signed-in session, or an API key with the trading scope.

    Every check of :func:`require_scope` is made, with one exception on the
    market's busiest path: for a session, the account row is not read here.
    The order's own statement checks that the account exists and is active (one
    round trip for both) and the order is refused otherwise. Routes that use
    the caller's role or profile take the full principal instead.
    """
    known: Principal | None = getattr(request.state, "principal", None)
    credentials = _credentials(request) if known is None else None
    if known is not None or credentials is None or credentials.startswith(KEY_MARKER):
        principal = known or await current_principal(request)
        return _scoped(request, principal, frozenset({Scope.TRADING})).user.id
    client = _uncounted_client(request)
    claims = await _admitted_claims(services_of(request), credentials, client=client)
    if client is not None:
        request.state.api_counted = True
    return claims.user_id
