"""What the market routes share: response models, the cached configuration, errors."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Request
from pydantic import PlainSerializer

from gridclear.cloud.api.deps import Principal, services_of
from gridclear.cloud.api.envelope import ApiModel
from gridclear.cloud.api.errors import ApiError, ErrorCode, refusal
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.decimals import base_units_to_tokens, wh_to_kwh
from gridclear.cloud.market.events import EventSink
from gridclear.cloud.market.metrics import MarketMetrics
from gridclear.cloud.market.placement import OrderPlacer

__all__ = [
    "AUTH_ERRORS",
    "MAX_ID",
    "PUBLIC_ERRORS",
    "JsonDecimal",
    "OrderOut",
    "SlotResultOut",
    "TimeslotOut",
    "events",
    "is_operator",
    "market_config",
    "market_error",
    "market_metrics",
    "order_out",
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
PUBLIC_ERRORS = (
    ErrorCode.INVALID_TOKEN,
    ErrorCode.TOKEN_EXPIRED,
    ErrorCode.FORBIDDEN,
    ErrorCode.RATE_LIMIT_EXCEEDED,
    ErrorCode.VALIDATION_ERROR,
)
"""Public market data: no credentials needed, but credentials sent are checked."""


def _json_number(value: Decimal) -> float:
    # Exact: every amount here has at most 13 significant digits (prices up to
    # 10**12 base units, quantities up to 10**9 Wh), and a double's shortest
    # repr gives back any decimal of 15 or fewer, so the JSON text is the
    # decimal's own digits.
    return float(value)


JsonDecimal = Annotated[Decimal, PlainSerializer(_json_number, return_type=float, when_used="json")]
"""An exact decimal written as a JSON number, as the Express predecessor's app reads it."""


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
    quantity: JsonDecimal
    """``quantityWh`` in kWh (the Express predecessor's unit), exact."""
    price_tokens: JsonDecimal
    """``price`` in tokens of the payment token per kWh (the market's ``paymentDecimals``)."""
    reserve_price: JsonDecimal | None
    """Supplies: ``priceTokens`` under the predecessor's name; null for bids."""


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


def order_out(data: dict[str, Any], *, payment_decimals: int) -> OrderOut:
    """The API's order from :func:`~gridclear.cloud.market.events.order_json` (or its
    public projection), with the predecessor's decimal fields added."""
    tokens = base_units_to_tokens(data["price"], decimals=payment_decimals)
    return OrderOut.model_validate(
        {
            **data,
            "quantity": wh_to_kwh(data["quantityWh"]),
            "priceTokens": tokens,
            "reservePrice": tokens if data["side"] == Side.SELL.value else None,
        }
    )


def is_operator(principal: Principal | None) -> bool:
    if principal is None:
        return False
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
