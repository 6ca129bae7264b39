"""What the market routes share: response models, the cached configuration, errors."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import Request

from gridclear.cloud.api.deps import Principal
from gridclear.cloud.api.envelope import ApiModel
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.market import store
from gridclear.cloud.market.config import MarketConfig, load_config
from gridclear.cloud.market.events import EventSink
from gridclear.cloud.market.metrics import MarketMetrics
from gridclear.cloud.market.placement import OrderPlacer

__all__ = [
    "AUTH_ERRORS",
    "MAX_ID",
    "OrderOut",
    "SlotResultOut",
    "TimeslotOut",
    "events",
    "is_operator",
    "market_config",
    "market_error",
    "market_metrics",
]

MAX_ID = 2**63 - 1
AUTH_ERRORS = (
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
    ErrorCode.VALIDATION_ERROR,
)
_CONFIG_TTL_S = 1.0
"""How long one API instance may use the configuration it read: a change applies
to new orders within a second, and placing an order costs no extra query."""


class OrderOut(ApiModel):
    id: int
    timeslot_id: int
    user_id: int | None
    """Hidden (null) in a slot's listing unless the order is the caller's."""
    meter_id: int | None
    side: str
    """``buy`` (a bid) or ``sell`` (a supply)."""
    quantity_wh: int
    price: int
    """Limit price, base units of the payment token per kWh."""
    status: str
    """``active``, ``cancelled``; cleared: ``filled``, ``partially_filled``, ``unfilled``."""
    version: int
    """Send it back with an amendment; it grows with every change."""
    filled_wh: int
    amount: int
    """After clearing: what the bid pays or the supply receives, base units."""
    created_at: datetime
    submitted_at: datetime
    """Time priority: the last placement or amendment."""
    updated_at: datetime


class SlotResultOut(ApiModel):
    price: int | None
    volume_wh: int | None
    total_amount: int | None
    bid_count: int | None
    offer_count: int | None
    cleared_at: datetime | None


class TimeslotOut(ApiModel):
    id: int
    state: str
    start_time: datetime
    end_time: datetime
    opens_at: datetime
    closes_at: datetime
    """Gate closure: orders are accepted, amended and cancelled until then."""
    settles_at: datetime
    price_floor: int
    price_cap: int
    result: SlotResultOut | None
    """Set once the slot is cleared."""


def is_operator(principal: Principal) -> bool:
    return principal.user.role in (Role.OPERATOR, Role.ADMIN)


def events(request: Request) -> EventSink | None:
    """The real-time publisher, when the real-time side is installed."""
    sink: EventSink | None = getattr(request.app.state, "events", None)
    return sink


async def market_config(request: Request, services: Services) -> MarketConfig:
    cached: tuple[float, MarketConfig] | None = getattr(request.app.state, "market_config", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < _CONFIG_TTL_S:
        return cached[1]
    async with services.pool.connection() as conn:
        config, _ = await load_config(conn)
    request.app.state.market_config = (now, config)
    return config


def market_metrics(request: Request, services: Services) -> MarketMetrics:
    """The app's market metrics, registered in the API's registry on first use."""
    metrics: MarketMetrics | None = getattr(request.app.state, "market_metrics", None)
    if metrics is None:
        metrics = MarketMetrics(services.metrics.registry)
        request.app.state.market_metrics = metrics
    return metrics


def order_placer(request: Request, services: Services) -> OrderPlacer:
    """The app's order placer (batching concurrent placements), made on first use."""
    placer: OrderPlacer | None = getattr(request.app.state, "order_placer", None)
    if placer is None:
        placer = OrderPlacer(services.pool)
        request.app.state.order_placer = placer
    return placer


def forget_config(request: Request) -> None:
    request.app.state.market_config = None


_CODES: dict[type[store.MarketError], ErrorCode] = {
    store.SlotNotFoundError: ErrorCode.NOT_FOUND,
    store.SlotNotOpenError: ErrorCode.TIMESLOT_EXPIRED,
    store.OrderNotFoundError: ErrorCode.NOT_FOUND,
    store.OrderStateError: ErrorCode.CONFLICT,
    store.StaleVersionError: ErrorCode.CONFLICT,
    store.MeterNotAllowedError: ErrorCode.FORBIDDEN,
    store.IdempotencyMismatchError: ErrorCode.IDEMPOTENCY_KEY_REUSED,
}


def market_error(exc: store.MarketError) -> ApiError:
    """The API error for a market refusal; ``details.reason`` is its stable code."""
    details: dict[str, Any] = {"reason": exc.reason}
    if isinstance(exc, store.StaleVersionError):
        details["currentVersion"] = exc.current
    return ApiError(_CODES.get(type(exc), ErrorCode.CONFLICT), str(exc), details=details)
