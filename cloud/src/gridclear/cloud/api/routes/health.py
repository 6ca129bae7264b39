"""Health: the seed's ``/api/health``, liveness and readiness, and ``GET /api/`` (what
this API is and where its documentation is). ``/metrics``: see the app.

``/api/health`` answers the Express predecessor's fields (``status``,
``timestamp``, ``uptime``, and from its root ``/health`` ``environment`` and
``message``) and gridclear's (``version``, ``database``, ``redis``,
``blockchain``). ``/health`` answers the same, for the predecessor's probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request

from gridclear.cloud import __version__
from gridclear.cloud.api.deps import ServicesDep
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.schemas import HealthOut, ReadyOut
from gridclear.cloud.api.services import Services

__all__ = [
    "ApiInfoOut",
    "BlockchainState",
    "api_info",
    "check_blockchain",
    "check_database",
    "check_redis",
    "health",
    "live",
    "ready",
    "router",
]

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


BlockchainState = Literal["connected", "disconnected", "not_configured"]


async def check_blockchain(services: Services) -> BlockchainState:
    """The ledger's state for ``/api/health`` and readiness.

    Without ``GRIDCLEAR_SOLANA_RPC_URL`` there is no ledger to ask: ``not_configured``
    (which does not make the service ``degraded``). Otherwise the ledger must answer
    ``getSlot`` within the check's timeout.
    """
    if services.ledger is None:
        return "not_configured"
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await services.ledger.slot()
    except Exception as exc:  # any failure means "not connected"; the reason is logged
        log.warning("blockchain check failed: %s", exc)
        return "disconnected"
    return "connected"


async def _ledger_ready(services: Services) -> bool:
    return await check_blockchain(services) == "connected"


@router.get("/api/health", summary="Service health (the seed's shape)")
async def health(services: ServicesDep) -> Ok[HealthOut]:
    """Always 200 while the process serves; ``status`` says whether dependencies answer."""
    database, redis, blockchain = await asyncio.gather(
        check_database(services), check_redis(services), check_blockchain(services)
    )
    healthy = database and redis and blockchain != "disconnected"
    return ok(
        HealthOut(
            status="ok" if healthy else "degraded",
            timestamp=services.clock(),
            uptime=round(time.monotonic() - services.started_monotonic, 3),
            version=__version__,
            database="connected" if database else "disconnected",
            redis="connected" if redis else "disconnected",
            blockchain=blockchain,
            environment=services.settings.env,
            message="gridclear API is running",
        )
    )


router.add_api_route(
    "/health",
    health,
    methods=["GET"],
    summary="Service health at the Express predecessor's root path (same as /api/health)",
    name="root_health",
)


class ApiInfoOut(ApiModel):
    name: str
    version: str
    status: Literal["active"] = "active"
    timestamp: datetime
    documentation: dict[str, str]
    """Where the API is described: ``openapi`` (JSON), ``docs``/``redoc`` (pages, when
    served) and the guides in the repository's ``docs/``."""


_GUIDES = "docs/"
"""The guides' place in gridclear's source tree (shipped with it, not served)."""


@router.get("/api/", summary="The API's name, version and where its documentation is")
async def api_info(services: ServicesDep, request: Request) -> Ok[ApiInfoOut]:
    documentation = {
        "api": _GUIDES + "API.md",
        "market": _GUIDES + "MARKET.md",
        "realtime": _GUIDES + "REALTIME.md",
        "migrating": _GUIDES + "MIGRATING.md",
    }
    if services.settings.serves_api_docs:
        documentation |= {"openapi": "/openapi.json", "docs": "/docs", "redoc": "/redoc"}
    return ok(
        ApiInfoOut(
            name="gridclear API",
            version=__version__,
            timestamp=services.clock(),
            documentation=documentation,
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
    checks_to_run = [
        check_database(services),
        check_redis(services),
        *(check() for check in services.readiness.values()),
    ]
    if services.ledger is not None:
        names.append("blockchain")
        checks_to_run.append(_ledger_ready(services))
    results = await asyncio.gather(*checks_to_run, return_exceptions=True)
    checks = {name: result is True for name, result in zip(names, results, strict=True)}
    if not all(checks.values()):
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, details={"checks": checks})
    return ok(ReadyOut(checks=checks))


router.add_api_route(
    "/api",
    api_info,
    methods=["GET"],
    summary="The API's name, version and documentation (as GET /api/)",
    name="api_info_no_slash",
)
