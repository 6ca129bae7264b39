"""``/api/bids`` and ``/api/supplies`` (with ``/api/my/...``): orders for delivery slots.

A bid buys, a supply (an offer) sells; both routes have the same shape and rules,
so one factory builds both routers:

- ``POST`` places an order in an **open** slot (else ``TIMESLOT_EXPIRED``) for a
  meter the caller owns that can import (bids) or export (supplies), with the
  quantity and price inside the market's bounds. With an ``Idempotency-Key``
  header, a retry with the same body returns the first order (201 again, with
  ``Idempotent-Replayed: true``); the same key with another body is refused
  (``IDEMPOTENCY_KEY_REUSED``).
- ``PUT`` amends quantity and/or price. Without a version the change applies
  (last writer wins, as the Express predecessor's apps expect); with the
  ``version`` last seen (in the body, or ``If-Match: "3"`` as the order's
  ``ETag`` gives it) a stale one gets ``CONFLICT`` with the current one in
  ``details``. An amendment resets the order's time priority.
- ``DELETE`` cancels (``?version=`` or ``If-Match`` optional, same check).

Bodies come in gridclear's integers or in the predecessor's decimals (kWh and
tokens per kWh), read exactly from the JSON text (:mod:`gridclear.cloud.api.orderbody`);
``meterId`` may be left out when the caller has one meter that fits the side.
Single-order answers carry gridclear's fields and, under ``bid`` or ``supply``,
the order as the predecessor answered it.

Amending and cancelling end at gate closure (``TIMESLOT_EXPIRED``), judged by the
slot's ``closesAt`` against the market's clock whatever its stored state. Changes
are published as ``bid_update``/``supply_update``: in the slot's room without the
owner and meter (as the slot's listing shows them), and whole to the owner alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from gridclear.cloud.api.deps import (
    Principal,
    ServicesDep,
    auth_failure,
    require_scope,
    services_of,
    trading_user_id,
)
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode, refusal
from gridclear.cloud.api.orderbody import (
    AmendTerms,
    OrderAmendIn,
    OrderIn,
    PlaceTerms,
    if_match_version,
    order_amend_schema,
    order_body_schema,
    parse_amend,
    parse_place,
)
from gridclear.cloud.api.routes._market import (
    AUTH_ERRORS,
    MAX_ID,
    JsonDecimal,
    OrderOut,
    events,
    is_operator,
    market_config,
    market_error,
    market_metrics,
    order_out,
    order_placer,
)
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity.roles import Scope
from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.events import order_json, publish_order
from gridclear.cloud.settlement import funds
from gridclear.cloud.settlement import store as settlement_store

__all__ = [
    "BidAnswer",
    "ExpressBidOut",
    "ExpressSupplyOut",
    "OrderAmendIn",
    "OrderIn",
    "SupplyAnswer",
    "bids_router",
    "supplies_router",
]

Trader = Annotated[Principal, Depends(require_scope(Scope.TRADING))]
Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.TRADING))]
TradingUserId = Annotated[int, Depends(trading_user_id)]
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
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=40,
        description='The order version you last saw, as its ETag gives it ("3"); stale: CONFLICT',
    ),
]

_EXPRESS_STATUS = {
    Side.BUY: {
        "active": "PENDING",
        "cancelled": "CANCELLED",
        "filled": "MATCHED",
        "partially_filled": "MATCHED",
        "unfilled": "EXPIRED",
    },
    Side.SELL: {
        "active": "COMMITTED",
        "cancelled": "CANCELLED",
        "filled": "ALLOCATED",
        "partially_filled": "ALLOCATED",
        "unfilled": "EXPIRED",
    },
}
"""gridclear's order status under the predecessor's names (docs/MIGRATING.md)."""


class _ExpressOrderOut(ApiModel):
    id: int
    timeslot_id: int
    quantity: JsonDecimal
    """kWh."""
    status: str
    """The predecessor's status names (``PENDING``/``COMMITTED``, ``MATCHED``/``ALLOCATED``,
    ``CANCELLED``, ``EXPIRED``)."""
    tx_signature: str | None = None
    """Settlement's ledger transaction for this order's trades, once settled (null until then)."""
    escrow_account: str | None = None
    """Always null: gridclear settles non-custodially, from delegated token accounts."""
    created_at: datetime
    updated_at: datetime


class ExpressBidOut(_ExpressOrderOut):
    """A bid as the Express predecessor answered it (``data.bid``)."""

    price: JsonDecimal
    """Tokens per kWh."""


class ExpressSupplyOut(_ExpressOrderOut):
    """A supply as the Express predecessor answered it (``data.supply``)."""

    reserve_price: JsonDecimal
    """Tokens per kWh."""


class BidAnswer(OrderOut):
    bid: ExpressBidOut
    """The same order in the predecessor's shape, where its apps read it."""


class SupplyAnswer(OrderOut):
    supply: ExpressSupplyOut
    """The same order in the predecessor's shape, where its apps read it."""


def _answer(out: OrderOut, side: Side) -> OrderOut:
    express: dict[str, object] = {
        "id": out.id,
        "timeslot_id": out.timeslot_id,
        "quantity": out.quantity,
        "status": _EXPRESS_STATUS[side].get(out.status, out.status.upper()),
        "created_at": out.created_at,
        "updated_at": out.updated_at,
    }
    fields = out.model_dump()
    if side is Side.BUY:
        return BidAnswer(
            **fields, bid=ExpressBidOut.model_validate({**express, "price": out.price_tokens})
        )
    return SupplyAnswer(
        **fields,
        supply=ExpressSupplyOut.model_validate({**express, "reserve_price": out.price_tokens}),
    )


def _request_hash(terms: PlaceTerms) -> bytes:
    canonical = json.dumps(terms.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def _version(body_version: int | None, if_match: str | None) -> int | None:
    """The version to check: the body's or the ``If-Match`` header's (they must agree)."""
    header_version = if_match_version(if_match)
    if body_version is not None and header_version is not None and body_version != header_version:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "version and If-Match name different versions",
            details=[
                {"location": ["body", "version"], "message": "differs from If-Match"},
                {"location": ["header", "If-Match"], "message": "differs from version"},
            ],
        )
    return body_version if body_version is not None else header_version


async def _publish(
    request: Request,
    order: store.OrderRecord,
    action: str,
    config: MarketConfig,
) -> None:
    await publish_order(events(request), order, action, payment_decimals=config.payment_decimals)


def _make_router(side: Side) -> APIRouter:  # noqa: PLR0915 -- one closure per route
    noun, plural = ("bid", "bids") if side is Side.BUY else ("supply", "supplies")
    router = APIRouter(tags=[plural])

    def _refused(request: Request, services: Services, exc: store.MarketError) -> ApiError:
        """The error for a refusal, counted by its stable code."""
        if isinstance(exc, store.AccountInactiveError):
            return auth_failure(services, ErrorCode.INVALID_TOKEN, "The account is not active")
        market_metrics(request, services).refusals.labels(side.value, exc.code).inc()
        return market_error(exc)

    answer_model = BidAnswer if side is Side.BUY else SupplyAnswer

    async def _settlement_allows(
        services: Services,
        *,
        user_id: int,
        quantity_wh: int,
        price: int,
        idempotency_key: str | None,
    ) -> None:
        """With settlement on: a wallet approved, and for a bid, the money to cover it."""
        if services.ledger is None:
            return
        async with services.pool.connection() as conn:
            setup = await settlement_store.load_setup(conn)
            if setup is None:
                return
            if idempotency_key is not None:
                cur = await conn.execute(
                    "SELECT 1 FROM orders WHERE user_id = %s AND idempotency_key = %s",
                    (user_id, idempotency_key),
                )
                if await cur.fetchone() is not None:
                    return  # a retry: answered as placed, whatever the funds are now
            try:
                if side is Side.BUY:
                    await funds.check_bid_funds(
                        conn,
                        services.ledger,
                        setup,
                        user_id=user_id,
                        quantity_wh=quantity_wh,
                        price=price,
                    )
                elif not await settlement_store.settlement_wallets(conn, [user_id]):
                    raise funds.WalletRequiredError(
                        "approve a wallet for settlement first (POST /api/blockchain/approvals)"
                    )
            except (funds.InsufficientBalanceError, funds.WalletRequiredError) as exc:
                raise refusal(exc) from None

    async def _settlement_allows_amend(
        services: Services, user_id: int, order_id: int, terms: AmendTerms
    ) -> None:
        if services.ledger is None:
            return
        async with services.pool.connection() as conn:
            setup = await settlement_store.load_setup(conn)
            cur = await conn.execute(
                "SELECT quantity_wh, price FROM orders WHERE id = %s AND user_id = %s",
                (order_id, user_id),
            )
            current = await cur.fetchone()
            if setup is None or current is None:
                return  # not found is the amendment's own answer
            quantity = (
                terms.quantity_wh if terms.quantity_wh is not None else current["quantity_wh"]
            )
            price = terms.price if terms.price is not None else current["price"]
            try:
                await funds.check_bid_funds(
                    conn,
                    services.ledger,
                    setup,
                    user_id=user_id,
                    quantity_wh=quantity,
                    price=price,
                    replacing_order_id=order_id,
                )
            except (funds.InsufficientBalanceError, funds.WalletRequiredError) as exc:
                raise refusal(exc) from None

    def _out(order: store.OrderRecord, config: MarketConfig) -> OrderOut:
        return order_out(order_json(order), payment_decimals=config.payment_decimals)

    def _one(order: store.OrderRecord, config: MarketConfig, response: Response) -> Ok[OrderOut]:
        response.headers["ETag"] = f'"{order.version}"'
        return ok(_answer(_out(order, config), side))

    async def place(
        user_id: TradingUserId,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> Ok[OrderOut]:
        services = services_of(request)
        config = await market_config(request, services)
        terms = parse_place(
            await request.body(), side=side, payment_decimals=config.payment_decimals
        )
        meter_id = terms.meter_id
        await _settlement_allows(
            services,
            user_id=user_id,
            quantity_wh=terms.quantity_wh,
            price=terms.price,
            idempotency_key=idempotency_key,
        )
        try:
            if meter_id is None:
                async with services.pool.connection() as conn:
                    meter_id = await store.sole_meter(conn, user_id=user_id, side=side)
            order, created = await order_placer(request, services).place(
                store.OrderRequest(
                    config=config,
                    user_id=user_id,
                    side=side,
                    timeslot_id=terms.timeslot_id,
                    meter_id=meter_id,
                    quantity_wh=terms.quantity_wh,
                    price=terms.price,
                    idempotency_key=idempotency_key,
                    request_hash=_request_hash(terms) if idempotency_key is not None else b"",
                )
            )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(
            side.value, "placed" if created else "replayed"
        ).inc()
        if created:
            await _publish(request, order, "created", config)
        else:
            response.headers["Idempotent-Replayed"] = "true"
        return _one(order, config, response)

    async def amend(  # noqa: PLR0917 -- FastAPI passes parameters by name
        order_id: int,
        principal: Trader,
        services: ServicesDep,
        request: Request,
        response: Response,
        if_match: IfMatch = None,
    ) -> Ok[OrderOut]:
        if not 0 < order_id <= MAX_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        config = await market_config(request, services)
        terms = parse_amend(
            await request.body(), side=side, payment_decimals=config.payment_decimals
        )
        if side is Side.BUY and (terms.quantity_wh is not None or terms.price is not None):
            await _settlement_allows_amend(services, principal.user.id, order_id, terms)
        try:
            async with services.pool.connection() as conn:
                order = await store.amend_order(
                    conn,
                    config=config,
                    order_id=order_id,
                    user_id=principal.user.id,
                    side=side,
                    version=_version(terms.version, if_match),
                    quantity_wh=terms.quantity_wh,
                    price=terms.price,
                )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(side.value, "amended").inc()
        await _publish(request, order, "updated", config)
        return _one(order, config, response)

    async def cancel(  # noqa: PLR0917 -- FastAPI passes parameters by name
        order_id: int,
        principal: Trader,
        services: ServicesDep,
        request: Request,
        response: Response,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
        if_match: IfMatch = None,
    ) -> Ok[OrderOut]:
        if not 0 < order_id <= MAX_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"No such {noun}")
        wanted = _version(version, if_match)
        config = await market_config(request, services)
        try:
            async with services.pool.connection() as conn:
                order = await store.cancel_order(
                    conn, order_id=order_id, user_id=principal.user.id, side=side, version=wanted
                )
        except store.MarketError as exc:
            raise _refused(request, services, exc) from None
        market_metrics(request, services).orders.labels(side.value, "cancelled").inc()
        await _publish(request, order, "cancelled", config)
        return _one(order, config, response)

    async def get_one(
        order_id: int,
        principal: Reader,
        services: ServicesDep,
        request: Request,
        response: Response,
    ) -> Ok[OrderOut]:
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
        return _one(order, await market_config(request, services), response)

    def lister(mine_only: bool) -> Callable[..., Awaitable[Ok[list[OrderOut]]]]:
        async def list_orders(  # noqa: PLR0917 -- FastAPI passes queries by name
            principal: Reader,
            services: ServicesDep,
            request: Request,
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
            config = await market_config(request, services)
            return ok([_out(o, config) for o in orders])

        return list_orders

    errors_in = error_responses(
        *AUTH_ERRORS,
        ErrorCode.NOT_FOUND,
        ErrorCode.TIMESLOT_EXPIRED,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ErrorCode.SELF_TRADE,
    )
    errors_change = error_responses(
        *AUTH_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.TIMESLOT_EXPIRED, ErrorCode.CONFLICT
    )
    router.add_api_route(
        f"/api/{plural}",
        place,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        summary=f"Place a {noun} in an open timeslot (gridclear's or the predecessor's body)",
        responses=errors_in,
        name=f"place_{noun}",
        response_model=Ok[answer_model],  # type: ignore[valid-type]
        openapi_extra={"requestBody": order_body_schema()},
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
        response_model=Ok[answer_model],  # type: ignore[valid-type]
    )
    router.add_api_route(
        f"/api/{plural}/{{order_id}}",
        amend,
        methods=["PUT"],
        summary=f"Amend a {noun} until gate closure (version or If-Match optional)",
        responses=errors_change,
        name=f"amend_{noun}",
        response_model=Ok[answer_model],  # type: ignore[valid-type]
        openapi_extra={"requestBody": order_amend_schema()},
    )
    router.add_api_route(
        f"/api/{plural}/{{order_id}}",
        cancel,
        methods=["DELETE"],
        summary=f"Cancel a {noun} until gate closure",
        responses=errors_change,
        name=f"cancel_{noun}",
        response_model=Ok[answer_model],  # type: ignore[valid-type]
    )
    return router


bids_router = _make_router(Side.BUY)
supplies_router = _make_router(Side.SELL)
