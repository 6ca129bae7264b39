"""The app factory: ``create_app(settings)`` builds the whole API.

Start-up (the lifespan) opens the PostgreSQL pool and the Redis connection
pool, fails fast when either is unreachable, and builds the stores, the limiter,
the user loader and the order placer on them; shutdown closes each, in the
reverse order (the batching ones answer what is queued first). Everything a
request needs hangs off ``app.state.services`` (see
:mod:`gridclear.cloud.api.services`); nothing is made on first use.

Socket.IO is served by the same app at ``/socket.io`` (docs/REALTIME.md): the
lifespan subscribes it to the deployment's Redis channel before the app serves,
and hangs the :class:`~gridclear.cloud.realtime.EventPublisher` on ``app.state.events``.

What the port shows besides the API is a setting: Prometheus ``/metrics`` is open
in development, needs ``GRIDCLEAR_METRICS_TOKEN`` as a bearer token when one is
set, and is absent in production without one; the OpenAPI document and its pages
(``/openapi.json``, ``/docs``, ``/redoc``) are served in development, and in
production only with ``GRIDCLEAR_API_DOCS=true``. ``app.openapi()`` builds the
document either way (405 answers name allowed methods from it).

Every answer wears the envelope, errors included: ``ApiError``, the service's
own refusals (:class:`~gridclear.cloud.errors.GridclearCloudError`, by their
``code``), FastAPI's validation errors, Starlette's 404 and 405, oversized bodies and, through
:class:`~gridclear.cloud.api.middleware.RequestContext`, unhandled exceptions
(a generic message; the traceback goes to the log with the request id).
"""

from __future__ import annotations

import gc
import hmac
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from gridclear.cloud import __version__
from gridclear.cloud.api.deps import API_GROUP, rate_limit
from gridclear.cloud.api.envelope import failure_body
from gridclear.cloud.api.errors import ApiError, ErrorCode, refusal
from gridclear.cloud.api.metrics import CONTENT_TYPE_LATEST, ApiMetrics
from gridclear.cloud.api.middleware import BodyLimit, Deadline, NoNul, RequestContext
from gridclear.cloud.api.ratelimit import RateLimiter
from gridclear.cloud.api.realtime import RealtimeServer
from gridclear.cloud.api.routes import (
    admin,
    auth,
    blockchain,
    health,
    keys,
    market_admin,
    orders,
    timeslots,
    users,
)
from gridclear.cloud.api.routes import devices as device_routes
from gridclear.cloud.api.routes import meters as meter_routes
from gridclear.cloud.api.services import Clock, Services
from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.identity.accounts import UserLoader
from gridclear.cloud.identity.mail import LogMailer, Mailer, MailOutbox, SmtpMailer
from gridclear.cloud.identity.nonces import NonceStore
from gridclear.cloud.identity.passwords import Passwords
from gridclear.cloud.identity.sessions import SessionRevocations
from gridclear.cloud.identity.tokens import AccessTokens
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.logs import configure_logging
from gridclear.cloud.market.metrics import MarketMetrics
from gridclear.cloud.market.placement import ConfigCache, OrderPlacer
from gridclear.cloud.realtime.metrics import RealtimeMetrics
from gridclear.cloud.settings import Settings, SettingsError
from gridclear.cloud.storage.migrations import discover_migrations
from gridclear.cloud.storage.pool import Pool, open_pool

__all__ = ["create_app", "create_app_from_env"]

log = logging.getLogger(__name__)


_REALTIME_SWEEP_S = 30.0
"""How often real-time connections with an expired token or revoked session are dropped."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The API for ``settings``; ``clock`` (UTC, aware) lets tests move time forward."""
    if not settings.database_url or not settings.redis_url:
        raise SettingsError("the API needs GRIDCLEAR_DATABASE_URL and GRIDCLEAR_REDIS_URL")
    signing_key = settings.signing_key()
    now = clock or _utc_now
    metrics = ApiMetrics()
    market_metrics = MarketMetrics(metrics.registry)
    realtime = RealtimeServer(
        redis_url=settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        services=lambda: app.state.services,
        metrics=RealtimeMetrics(metrics.registry),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.services = await _open_services(
                stack,
                settings,
                signing_key=signing_key,
                clock=now,
                metrics=metrics,
                market_metrics=market_metrics,
            )
            app.state.order_placer = app.state.services.orders  # its older name
            # Real time: ready only once subscribed to the deployment's Redis channel.
            await realtime.start(sweep_every_s=_REALTIME_SWEEP_S)
            stack.push_async_callback(realtime.stop)
            app.state.events = realtime.events
            # Everything built so far lives as long as the app: out of the
            # collector's sight, the full collections that pause every request
            # stay short.
            gc.collect()
            gc.freeze()
            log.info("gridclear API ready (%s mode)", settings.env)
            yield

    app = FastAPI(
        title="gridclear API",
        version=__version__,
        description=(
            "The gridclear cloud API. Every answer is an envelope: "
            '`{"success": true, "data": ...}` or '
            '`{"success": false, "error": {"message", "code", "details"}}`.'
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.serves_api_docs else None,
        docs_url="/docs" if settings.serves_api_docs else None,
        redoc_url="/redoc" if settings.serves_api_docs else None,
    )
    per_ip = [Depends(rate_limit(API_GROUP))]
    # Routes are matched in order, one by one: the busiest go first. (No two
    # routers share a path, so the order changes nothing else.) Every order
    # route authenticates, and the principal dependency counts the client's
    # address with its identity in one Redis round trip, so no per_ip here.
    app.include_router(orders.bids_router)
    app.include_router(orders.supplies_router)
    app.include_router(timeslots.router, dependencies=per_ip)
    app.include_router(meter_routes.router, dependencies=per_ip)
    app.include_router(auth.sign_in_router)  # counts the address with its own limits
    app.include_router(auth.router, dependencies=per_ip)
    app.include_router(users.router, dependencies=per_ip)
    app.include_router(keys.router, dependencies=per_ip)
    app.include_router(admin.router, dependencies=per_ip)
    app.include_router(device_routes.router, dependencies=per_ip)
    app.include_router(market_admin.router, dependencies=per_ip)
    app.include_router(blockchain.router, dependencies=per_ip)
    app.include_router(health.router)
    _mount_metrics(app, settings, metrics)
    app.mount("/socket.io", realtime.asgi, name="socket.io")
    app.state.realtime = realtime
    _install_error_handlers(app, metrics)

    _install_middleware(app, settings, metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _open_services(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    signing_key: Ed25519PrivateKey,
    clock: Clock,
    metrics: ApiMetrics,
    market_metrics: MarketMetrics,
) -> Services:
    """Open the pools and build what requests use on them; ``stack`` closes each in reverse."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    now = clock
    pool = await stack.enter_async_context(
        open_pool(
            settings.database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            statement_timeout_ms=(
                settings.db_statement_timeout_ms or int(settings.request_timeout_s * 1000)
            ),
        )
    )
    await _check_schema(pool)
    redis_pool = ConnectionPool.from_url(settings.redis_url)
    stack.push_async_callback(redis_pool.aclose)
    redis = Redis(connection_pool=redis_pool)
    await redis.ping()
    prefix = settings.redis_key_prefix
    access_ttl = timedelta(seconds=settings.access_token_ttl_s)
    # Closed before the pools they use (the stack unwinds in reverse).
    limiter = RateLimiter(
        redis=redis,
        prefix=prefix,
        limits=settings.rate_limits,
        enabled=settings.rate_limits_enabled,
    )
    stack.push_async_callback(limiter.aclose)
    users = UserLoader(pool)
    stack.push_async_callback(users.aclose)
    placer = OrderPlacer(pool)
    stack.push_async_callback(placer.aclose)
    ledger = None
    if settings.solana_rpc_url is not None:
        ledger = LedgerClient(settings.solana_rpc_url, commitment=settings.solana_commitment)
        stack.push_async_callback(ledger.close)
    mail = MailOutbox(_mailer(settings))
    stack.push_async_callback(mail.aclose)
    return Services(
        settings=settings,
        clock=now,
        pool=pool,
        redis=redis,
        tokens=AccessTokens(
            private_key=signing_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=access_ttl,
            clock=now,
        ),
        nonces=NonceStore(redis=redis, prefix=prefix, ttl_s=settings.nonce_ttl_s),
        revocations=SessionRevocations(redis=redis, prefix=prefix, access_ttl=access_ttl),
        passwords=Passwords(
            time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
        ),
        limiter=limiter,
        users=users,
        metrics=metrics,
        market_metrics=market_metrics,
        market_config=ConfigCache(pool),
        orders=placer,
        ledger=ledger,
        mail=mail,
    )


def _mailer(settings: Settings) -> Mailer:
    """SMTP when configured; otherwise (development only: production refuses) the log."""
    if settings.smtp_host:
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port_or_default,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
        )
    log.warning(
        "DEVELOPMENT: no GRIDCLEAR_SMTP_HOST; verification and password-reset links are "
        "LOGGED, not mailed. Anyone who reads this log can use them. Never run so in production."
    )
    return LogMailer()


def _install_middleware(app: FastAPI, settings: Settings, metrics: ApiMetrics) -> None:
    """The middleware stack; the last added runs first on a request."""
    app.add_middleware(NoNul)  # inside BodyLimit: the body it reads whole is bounded
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(Deadline, seconds=settings.request_timeout_s, metrics=metrics)
    app.add_middleware(RequestContext, metrics=metrics, hsts=settings.env == "production")


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    settings = Settings.load()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return create_app(settings)


def _mount_metrics(app: FastAPI, settings: Settings, metrics: ApiMetrics) -> None:
    """``/metrics``: open in development, behind the bearer token when one is set, else absent.

    The figures say how the service is used and attacked (routes, refusals, rate
    limits): nothing a stranger should read, so production serves them only to a
    scraper that holds the token.
    """
    token = settings.metrics_token
    if token is None and settings.env != "development":
        return
    expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None

    async def render(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                metrics.auth_failures.labels(ErrorCode.AUTHENTICATION_REQUIRED.value).inc()
                raise ApiError(
                    ErrorCode.AUTHENTICATION_REQUIRED,
                    "The metrics need the configured bearer token",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", render, methods=["GET"], summary="Prometheus metrics", include_in_schema=False
    )


async def _check_schema(pool: Pool) -> None:
    """Refuse to start on a database that lacks migrations this code needs."""
    import psycopg

    async with pool.connection() as conn:
        try:
            cur = await conn.execute("SELECT version FROM schema_migrations")
            applied = {int(row["version"]) for row in await cur.fetchall()}
        except psycopg.errors.UndefinedTable:
            applied = set()
    missing = [m for m in discover_migrations() if m.version not in applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise RuntimeError(
            f"the database lacks migrations {names}: run `gridclear-cloud migrate` first"
        )


def _error_response(metrics: ApiMetrics, error: ApiError) -> JSONResponse:
    metrics.errors.labels(error.code.value).inc()
    return JSONResponse(
        failure_body(error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers,
    )


_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.AUTHENTICATION_REQUIRED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMIT_EXCEEDED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


_OUTAGES: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    psycopg.OperationalError,
    PoolTimeout,
)
"""A dependency that did not answer (refused, dropped, timed out, pool exhausted)."""
_RETRY_AFTER_OUTAGE_S = 2


def _install_error_handlers(app: FastAPI, metrics: ApiMetrics) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error_response(metrics, exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 400:
            # The framework's "error parsing the body" (bytes that are not UTF-8 JSON):
            # the same answer as any other malformed body.
            return _error_response(
                metrics,
                ApiError(ErrorCode.VALIDATION_ERROR, "The request body could not be parsed"),
            )
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
        response = _error_response(metrics, ApiError(code, headers=headers))
        # Keep the framework's status (a 405 stays a 405) even when we map the code.
        response.status_code = exc.status_code if exc.status_code >= 400 else code.status
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # The offending input is not echoed back: it may hold a password or a token.
        details = [
            {"location": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error_response(metrics, ApiError(ErrorCode.VALIDATION_ERROR, details=details))

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        # One of the service's own refusals that no route answered itself: by its
        # code (a code the API does not name is a 500, as a bug is).
        assert isinstance(exc, GridclearCloudError)
        error = refusal(exc)
        if error.code is ErrorCode.INTERNAL_ERROR:
            log.error(
                "unanswered %s (%s) answering %s %s",
                type(exc).__name__,
                exc.code,
                request.method,
                request.url.path,
                exc_info=exc,
            )
        return _error_response(metrics, error)

    async def dependency_down(request: Request, exc: Exception) -> JSONResponse:
        # The database or Redis did not answer: a clear, retryable 503 (not the
        # generic 500), logged without a traceback, counted by dependency.
        dependency = "redis" if isinstance(exc, RedisError) else "database"
        log.warning(
            "%s unavailable answering %s %s: %s: %s",
            dependency,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return _error_response(
            metrics,
            ApiError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"The {dependency} is not answering; retry shortly",
                details={"dependency": dependency},
                headers={"Retry-After": str(_RETRY_AFTER_OUTAGE_S)},
            ),
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(GridclearCloudError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for outage in _OUTAGES:
        app.add_exception_handler(outage, dependency_down)


def _allowed_methods(request: Request) -> str:
    """The documented methods of this path (Starlette names only its first route's).

    Read from the app's OpenAPI paths, the public list of what is served.
    """
    app: FastAPI = request.app
    path = request.url.path
    by_specificity: dict[int, set[str]] = {}
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            # A literal segment beats a parameter (/api/devices/enroll, not /{device_id}).
            methods = by_specificity.setdefault(template.count("{"), set())
            methods |= {m.upper() for m in operations}
    return ", ".join(sorted(by_specificity[min(by_specificity)])) if by_specificity else ""


_FAILURE_REF = {"$ref": "#/components/schemas/Failure"}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, corrected to what the API really answers.

    FastAPI documents validation errors as its own ``HTTPValidationError``; ours
    wear the envelope. Every operation can also answer 500, every operation with
    a body 413, every rate-limited one 429 and (its database or Redis down) 503;
    authenticated ones say how.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or gck_ API key"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    generic = {
        "description": "Error (envelope)",
        "content": {"application/json": {"schema": _FAILURE_REF}},
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "Error: VALIDATION_ERROR",
                    "content": {"application/json": {"schema": _FAILURE_REF}},
                }
            responses.setdefault("500", {**generic, "description": "Error: INTERNAL_ERROR"})
            if "requestBody" in operation:
                responses.setdefault("413", {**generic, "description": "Error: PAYLOAD_TOO_LARGE"})
            if path.startswith("/api/") and not path.startswith("/api/health"):
                responses.setdefault(
                    "429", {**generic, "description": "Error: RATE_LIMIT_EXCEEDED"}
                )
                responses.setdefault(
                    "503",
                    {**generic, "description": "Error: SERVICE_UNAVAILABLE, DEADLINE_EXCEEDED"},
                )
            if "AUTHENTICATION_REQUIRED" in responses.get("401", {}).get("description", ""):
                operation["security"] = [{"bearerAuth": []}, {"apiKey": []}]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if "Failure" not in schemas:
        raise RuntimeError("no route documents the Failure envelope")
    app.openapi_schema = schema
    return schema
