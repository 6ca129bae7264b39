"""What the market routes share: response models, the cached configuration, errors."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request

from gridclear.cloud.api.deps import Principal, services_of
from gridclear.cloud.api.envelope import ApiModel
from gridclear.cloud.api.errors import ApiError, ErrorCode, refusal
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.market import store
from gridclear.cloud.market.config import MarketConfig
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
    """The market's configuration, at most a second old (see ``ConfigCache``)."""
    return await services.market_config.get()


def market_metrics(request: Request, services: Services) -> MarketMetrics:
    """The app's market metrics (in the API's registry)."""
    return services.market_metrics


def order_placer(request: Request, services: Services) -> OrderPlacer:
    """The app's order placer (batching concurrent placements)."""
    return services.orders


def forget_config(request: Request) -> None:
    services_of(request).market_config.forget()


def market_error(exc: store.MarketError) -> ApiError:
    """The API error for a market refusal (by its ``code``); ``details.reason`` is the code."""
    error = refusal(exc)
    if isinstance(exc, store.StaleVersionError):
        error.details = {**error.details, "currentVersion": exc.current}
    return error
