"""Health: the seed's ``/api/health``, liveness and readiness (``/metrics``: see the app)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter

from gridclear.cloud import __version__
from gridclear.cloud.api.deps import ServicesDep
from gridclear.cloud.api.envelope import Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.schemas import HealthOut, ReadyOut
from gridclear.cloud.api.services import Services

__all__ = ["check_database", "check_redis", "health", "live", "ready", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
_CHECK_TIMEOUT_S = 2.0


async def check_database(services: Services) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S), services.pool.connection() as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not connected"; the reason is logged
        log.warning("database check failed: %s", exc)
        return False
    return True


async def check_redis(services: Services) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await services.redis.ping()
    except Exception as exc:  # any failure means "not connected"; the reason is logged
        log.warning("redis check failed: %s", exc)
        return False
    return True


@router.get("/api/health", summary="Service health (the seed's shape)")
async def health(services: ServicesDep) -> Ok[HealthOut]:
    """Always 200 while the process serves; ``status`` says whether dependencies answer."""
    database, redis = await asyncio.gather(check_database(services), check_redis(services))
    return ok(
        HealthOut(
            status="ok" if database and redis else "degraded",
            timestamp=services.clock(),
            uptime=round(time.monotonic() - services.started_monotonic, 3),
            version=__version__,
            database="connected" if database else "disconnected",
            redis="connected" if redis else "disconnected",
        )
    )


@router.get("/api/health/live", summary="Liveness: the process answers")
async def live() -> Ok[dict[str, str]]:
    return ok({"status": "alive"})


@router.get(
    "/api/health/ready",
    summary="Readiness: every dependency answers",
    responses=error_responses(ErrorCode.SERVICE_UNAVAILABLE),
)
async def ready(services: ServicesDep) -> Ok[ReadyOut]:
    """503 ``SERVICE_UNAVAILABLE`` with each check's result when any dependency fails."""
    names = ["database", "redis", *services.readiness]
    results = await asyncio.gather(
        check_database(services),
        check_redis(services),
        *(check() for check in services.readiness.values()),
        return_exceptions=True,
    )
    checks = {name: result is True for name, result in zip(names, results, strict=True)}
    if not all(checks.values()):
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, details={"checks": checks})
    return ok(ReadyOut(checks=checks))
