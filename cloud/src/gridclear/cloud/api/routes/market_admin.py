"""``/api/market/config``: the market's rules; everyone reads, operators change them.

A change applies to slots the scheduler creates afterwards (their times and price
bounds) and to orders placed afterwards (quantity bounds); existing slots keep
theirs. The stored row records who made the last change, and when.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from gridclear.cloud.api.deps import Principal, ServicesDep, require_role, require_scope
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._market import AUTH_ERRORS, forget_config
from gridclear.cloud.identity.roles import Role, Scope
from gridclear.cloud.market.config import ConfigError, MarketConfig, load_config, save_config

__all__ = ["MarketConfigIn", "MarketConfigOut", "get_config", "put_config", "router"]

router = APIRouter(prefix="/api/market", tags=["market"])

Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.TRADING))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR, Role.ADMIN))]
Whole = Annotated[int, Field(strict=True, ge=0, le=10**12)]


class MarketConfigOut(ApiModel):
    slot_length_s: int
    open_ahead_s: int
    gate_closure_s: int
    settlement_grace_s: int
    price_floor: int
    price_cap: int
    min_quantity_wh: int
    max_quantity_wh: int
    quantity_step_wh: int
    payment_decimals: int
    """Decimals of the payment token (USDC: 6); converts decimal token prices."""
    updated_at: datetime


class MarketConfigIn(ApiModel):
    """Any subset of the settings; the others keep their values."""

    slot_length_s: Whole | None = None
    open_ahead_s: Whole | None = None
    gate_closure_s: Whole | None = None
    settlement_grace_s: Whole | None = None
    price_floor: Whole | None = None
    price_cap: Whole | None = None
    min_quantity_wh: Whole | None = None
    max_quantity_wh: Whole | None = None
    quantity_step_wh: Whole | None = None
    payment_decimals: Whole | None = None


def _out(config: MarketConfig, updated_at: datetime) -> MarketConfigOut:
    return MarketConfigOut(**asdict(config), updated_at=updated_at)


@router.get(
    "/config", summary="The market's configuration", responses=error_responses(*AUTH_ERRORS)
)
async def get_config(principal: Reader, services: ServicesDep) -> Ok[MarketConfigOut]:
    async with services.pool.connection() as conn:
        config, updated_at = await load_config(conn)
    return ok(_out(config, updated_at))


@router.put(
    "/config",
    summary="Change the market's configuration (operators and admins)",
    responses=error_responses(*AUTH_ERRORS),
)
async def put_config(
    body: MarketConfigIn, operator: Operator, services: ServicesDep, request: Request
) -> Ok[MarketConfigOut]:
    changes = body.model_dump(exclude_none=True)
    async with services.pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT 1 FROM market_config FOR UPDATE")
        await cur.fetchone()
        config, _ = await load_config(conn)
        try:
            config = config.updated(**changes)
        except ConfigError as exc:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR, str(exc), details={"field": exc.field}
            ) from None
        updated_at = await save_config(conn, config, user_id=operator.user.id)
    forget_config(request)
    return ok(_out(config, updated_at))
