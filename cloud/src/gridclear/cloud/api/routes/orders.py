"""``/api/bids`` and ``/api/supplies`` (with ``/api/my/...``): orders for delivery slots.

A bid buys, a supply (an offer) sells; both routes have the same shape and rules,
so one factory builds both routers:

- ``POST`` places an order in an **open** slot (else ``TIMESLOT_EXPIRED``) for a
  meter the caller owns that can import (bids) or export (supplies), with the
  quantity and price inside the market's bounds. With an ``Idempotency-Key``
  header, a retry with the same body returns the first order (201 again, with
  ``Idempotent-Replayed: true``); the same key with another body is refused
  (``IDEMPOTENCY_KEY_REUSED``).
- ``PUT`` amends quantity and/or price, carrying the ``version`` last seen; a
  stale version gets ``CONFLICT`` with the current one in ``details``. An
  amendment resets the order's time priority.
- ``DELETE`` cancels (``?version=`` optional, same check).

Amending and cancelling end at gate closure (``TIMESLOT_EXPIRED``), judged by the
slot's ``closesAt`` against the market's clock whatever its stored state. Changes
are published as ``bid_update``/``supply_update``: in the slot's room without the
owner and meter (as the slot's listing shows them), and whole to the owner alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import Field

from gridclear.cloud.api.deps import (
    Principal,
    ServicesDep,
    auth_failure,
    require_scope,
    services_of,
    trading_user_id,
)
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._market import (
    AUTH_ERRORS,
    MAX_ID,
    OrderOut,
    events,
    is_operator,
    market_config,
    market_error,
    market_metrics,
    order_placer,
)
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Scope
from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import MAX_PRICE, MAX_QUANTITY_WH, Side
from gridclear.cloud.market.events import order_json, publish_order

__all__ = ["OrderAmendIn", "OrderIn", "bids_router", "supplies_router"]

Trader = Annotated[Principal, Depends(require_scope(Scope.TRADING))]
Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.TRADING))]
TradingUserId = Annotated[int, Depends(trading_user_id)]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY_WH)]
Price = Annotated[int, Field(strict=True, ge=0, le=MAX_PRICE)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string per intended order; a retry with it never places twice",
    ),
]


class OrderIn(ApiModel):
    timeslot_id: Id
    meter_id: Id
    """A meter you own: import-capable for a bid, export-capable for a supply."""
    quantity_wh: Quantity
    price: Price
    """Limit price, base units of the payment token per kWh."""


class OrderAmendIn(ApiModel):
    version: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
    """The version you last saw; a different current version is a CONFLICT."""
    quantity_wh: Quantity | None = None
    price: Price | None = None


def _out(order: store.OrderRecord, *, data: dict[str, object] | None = None) -> OrderOut:
    return OrderOut.model_validate(data if data is not None else order_json(order))


def _request_hash(body: OrderIn) -> bytes:
    canonical = json.dumps(body.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


async def _publish(
    request: Request,
    order: store.OrderRecord,
    action: str,
    data: dict[str, object] | None = None,
) -> None:
    await publish_order(events(request), order, action, data=data)


def _make_router(side: Side) -> APIRouter:  # noqa: PLR0915 -- one closure per route
    noun, plural = ("bid", "bids") if side is Side.BUY else ("supply", "supplies")
    router = APIRouter(tags=[plural])

    def _refused(request: Request, services: Services, exc: store.MarketError) -> ApiError:
        """The error for a refusal, counted by its stable code."""
        if isinstance(exc, store.AccountInactiveError):
            return auth_failure(services, ErrorCode.INVALID_TOKEN, "The account is not active")
        market_metrics(request, services).refusals.labels(side.value, exc.code).inc()
        return market_error(exc)

    async def place(
        body: OrderIn,
        user_id: TradingUserId,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> Ok[OrderOut]:
        services = services_of(request)
        config = await market_config(request, services)
        try:
            order, created = await order_placer(request, services).place(
                store.OrderRequest(
                    config=config,
                    user_id=user_id,
                    side=side,
                    timeslot_id=body.timeslot_id,
                    meter_id=body.meter_id,
                    quantity_wh=body.quantity_wh,
                    price=body.price,
                    idempotency_key=idempotency_key,
                    request_hash=_request_hash(body) if idempotency_key is not None else b"",
                )
            )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(
            side.value, "placed" if created else "replayed"
        ).inc()
        data = order_json(order)
        if created:
            await _publish(request, order, "created", data)
        else:
            response.headers["Idempotent-Replayed"] = "true"
        return ok(_out(order, data=data))

    async def amend(
        order_id: int,
        body: OrderAmendIn,
        principal: Trader,
        services: ServicesDep,
        request: Request,
    ) -> Ok[OrderOut]:
        if not 0 < order_id <= MAX_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        if body.quantity_wh is None and body.price is None:
            raise ApiError(ErrorCode.VALIDATION_ERROR, "give quantityWh, price or both")
        config = await market_config(request, services)
        try:
            async with services.pool.connection() as conn:
                order = await store.amend_order(
                    conn,
                    config=config,
                    order_id=order_id,
                    user_id=principal.user.id,
                    side=side,
                    version=body.version,
                    quantity_wh=body.quantity_wh,
                    price=body.price,
                )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(side.value, "amended").inc()
        await _publish(request, order, "updated")
        return ok(_out(order))

    async def cancel(
        order_id: int,
        principal: Trader,
        services: ServicesDep,
        request: Request,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> Ok[OrderOut]:
        if not 0 < order_id <= MAX_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        try:
            async with services.pool.connection() as conn:
                order = await store.cancel_order(
                    conn, order_id=order_id, user_id=principal.user.id, side=side, version=version
                )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(side.value, "cancelled").inc()
        await _publish(request, order, "cancelled")
        return ok(_out(order))

    async def get_one(order_id: int, principal: Reader, services: ServicesDep) -> Ok[OrderOut]:
        if not 0 < order_id <= MAX_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        async with services.pool.connection() as conn:
            try:
                order = await store.get_order(conn, order_id)
            except store.OrderNotFoundError:
                order = None
        if (
            order is None
            or order.side is not side
            or (order.user_id != principal.user.id and not is_operator(principal))
        ):
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        return ok(_out(order))

    def lister(mine_only: bool) -> Callable[..., Awaitable[Ok[list[OrderOut]]]]:
        async def list_orders(  # noqa: PLR0917 -- FastAPI passes queries by name
            principal: Reader,
            services: ServicesDep,
            timeslot_id: Annotated[int | None, Query(alias="timeslotId", ge=1, le=MAX_ID)] = None,
            order_status: Annotated[str | None, Query(alias="status", max_length=20)] = None,
            limit: Limit = 100,
            offset: Offset = 0,
        ) -> Ok[list[OrderOut]]:
            owner = None if (not mine_only and is_operator(principal)) else principal.user.id
            async with services.pool.connection() as conn:
                orders = await store.list_orders(
                    conn,
                    side=side,
                    user_id=owner,
                    timeslot_id=timeslot_id,
                    status=order_status,
                    limit=limit,
                    offset=offset,
                )
            return ok([_out(o) for o in orders])

        return list_orders

    errors_in = error_responses(
        *AUTH_ERRORS,
        ErrorCode.NOT_FOUND,
        ErrorCode.TIMESLOT_EXPIRED,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
    )
    errors_change = error_responses(
        *AUTH_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.TIMESLOT_EXPIRED, ErrorCode.CONFLICT
    )
    router.add_api_route(
        f"/api/{plural}",
        place,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        summary=f"Place a {noun} in an open timeslot",
        responses=errors_in,
        name=f"place_{noun}",
    )
    router.add_api_route(
        f"/api/{plural}",
        lister(mine_only=False),
        methods=["GET"],
        summary=f"{plural.title()}: every one for operators, the caller's own for participants",
        responses=error_responses(*AUTH_ERRORS),
        name=f"list_{plural}",
    )
    router.add_api_route(
        f"/api/my/{plural}",
        lister(mine_only=True),
        methods=["GET"],
        summary=f"The caller's own {plural}, newest first",
        responses=error_responses(*AUTH_ERRORS),
        name=f"my_{plural}",
    )
    router.add_api_route(
        f"/api/{plural}/{{order_id}}",
        get_one,
        methods=["GET"],
        summary=f"One {noun} (the caller's own; any for operators)",
        responses=error_responses(*AUTH_ERRORS, ErrorCode.NOT_FOUND),
        name=f"get_{noun}",
    )
    router.add_api_route(
        f"/api/{plural}/{{order_id}}",
        amend,
        methods=["PUT"],
        summary=f"Amend a {noun} until gate closure (optimistic concurrency on version)",
        responses=errors_change,
        name=f"amend_{noun}",
    )
    router.add_api_route(
        f"/api/{plural}/{{order_id}}",
        cancel,
        methods=["DELETE"],
        summary=f"Cancel a {noun} until gate closure",
        responses=errors_change,
        name=f"cancel_{noun}",
    )
    return router


bids_router = _make_router(Side.BUY)
supplies_router = _make_router(Side.SELL)
