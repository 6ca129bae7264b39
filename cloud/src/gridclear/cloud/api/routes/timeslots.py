"""``/api/timeslots``: delivery slots, their orders, their book and their result;
``/api/market/prices`` (price history); and ``/api/my/trades``.

Market data a public market publishes is public (DESIGN §12): every route here
but ``/api/my/trades`` answers without credentials, counted per client address
in the ``public`` rate-limit group (:func:`~gridclear.cloud.api.deps.public_reader`);
credentials that are sent are still checked. A slot's orders are shown to
everyone, signed in or not, operators included, in one public projection
(:func:`~gridclear.cloud.market.events.public_order_json`, what the slot's
real-time room shows): price, quantity, status and times, with no owner and no
meter (``userId`` and ``meterId`` null). A caller's own orders, with everything,
are at ``/api/my/bids`` and ``/api/my/supplies``. Results list every order's fill
and the trades by order id, never by account.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from gridclear.cloud.api.deps import Principal, ServicesDep, public_reader, require_scope
from gridclear.cloud.api.envelope import ApiModel, Ok, error_responses, ok
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.routes._market import (
    AUTH_ERRORS,
    MAX_ID,
    PUBLIC_ERRORS,
    JsonDecimal,
    OrderOut,
    TimeslotOut,
    market_config,
    order_out,
)
from gridclear.cloud.api.schemas import IsoDatetime
from gridclear.cloud.identity.roles import Scope
from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.decimals import base_units_to_tokens
from gridclear.cloud.market.events import public_order_json, slot_json
from gridclear.cloud.market.timeslots import SlotState

__all__ = [
    "BookLevel",
    "BookOut",
    "FillOut",
    "MyTradeOut",
    "PricePointOut",
    "ResultOut",
    "TradeOut",
    "active_timeslots",
    "get_timeslot",
    "list_timeslots",
    "my_trades",
    "price_history",
    "router",
    "timeslot_bids",
    "timeslot_book",
    "timeslot_result",
    "timeslot_supplies",
]

router = APIRouter(tags=["timeslots"])

Reader = Annotated[Principal, Depends(require_scope(Scope.READ, Scope.TRADING))]
Public = Annotated[Principal | None, Depends(public_reader)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
_CLEARED = (SlotState.CLEARED, SlotState.SETTLING, SlotState.SETTLED)


class BookLevel(ApiModel):
    price: int
    quantity_wh: int
    """Quantity at exactly this price."""
    cumulative_wh: int
    """Bids: quantity at this price or higher (demand). Offers: at this price or lower."""


class BookOut(ApiModel):
    timeslot_id: int
    state: str
    bids: list[BookLevel]
    """Demand curve, highest price first."""
    offers: list[BookLevel]
    """Supply curve, lowest price first."""


class FillOut(ApiModel):
    order_id: int
    side: str
    quantity_wh: int
    price: int
    filled_wh: int
    amount: int
    status: str


class TradeOut(ApiModel):
    id: int
    timeslot_id: int
    seq: int
    buy_order_id: int
    sell_order_id: int
    quantity_wh: int
    price: int
    amount: int
    """``floor(quantityWh * price / 1000)``, paid by the buyer to the seller."""
    created_at: datetime


class ResultOut(ApiModel):
    timeslot_id: int
    state: str
    price: int | None
    volume_wh: int
    total_amount: int
    fills: list[FillOut]
    trades: list[TradeOut]


class PricePointOut(ApiModel):
    timeslot_id: int
    start_time: datetime
    end_time: datetime
    state: str
    price: int | None
    """Clearing price, base units per kWh; null when nothing traded."""
    price_tokens: JsonDecimal | None
    """The same in tokens per kWh."""
    volume_wh: int
    cleared_at: datetime | None


class MyTradeOut(TradeOut):
    role: str
    """``buyer`` or ``seller``: the caller's side of the trade."""


def _slot_out(slot: store.Timeslot) -> TimeslotOut:
    return TimeslotOut.model_validate(slot_json(slot))


async def _slot(services: ServicesDep, slot_id: int) -> store.Timeslot:
    if not 0 < slot_id <= MAX_ID:
        raise ApiError(ErrorCode.NOT_FOUND, "No such timeslot")
    async with services.pool.connection() as conn:
        try:
            return await store.get_slot(conn, slot_id)
        except store.SlotNotFoundError:
            raise ApiError(ErrorCode.NOT_FOUND, "No such timeslot") from None


@router.get(
    "/api/timeslots",
    summary="Timeslots by start time (filter by state and start range)",
    responses=error_responses(*PUBLIC_ERRORS),
)
async def list_timeslots(  # noqa: PLR0917 -- FastAPI passes queries by name
    principal: Public,
    services: ServicesDep,
    state: Annotated[list[SlotState] | None, Query()] = None,
    start: Annotated[IsoDatetime | None, Query(alias="from")] = None,
    end: Annotated[IsoDatetime | None, Query(alias="to")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Ok[list[TimeslotOut]]:
    async with services.pool.connection() as conn:
        slots = await store.list_slots(
            conn, states=state, start_from=start, start_to=end, limit=limit, offset=offset
        )
    return ok([_slot_out(s) for s in slots])


@router.get(
    "/api/timeslots/active",
    summary="The slots open for orders now, soonest delivery first",
    responses=error_responses(*PUBLIC_ERRORS),
)
async def active_timeslots(principal: Public, services: ServicesDep) -> Ok[list[TimeslotOut]]:
    """Open and before gate closure by the market's clock (a lagging scheduler's slot is not)."""
    async with services.pool.connection() as conn:
        slots = await store.list_slots(conn, states=[SlotState.OPEN], limit=1000, before_gate=True)
    return ok([_slot_out(s) for s in slots])


@router.get(
    "/api/timeslots/{slot_id}",
    summary="One timeslot, with its result summary once cleared",
    responses=error_responses(*PUBLIC_ERRORS, ErrorCode.NOT_FOUND),
)
async def get_timeslot(slot_id: int, principal: Public, services: ServicesDep) -> Ok[TimeslotOut]:
    return ok(_slot_out(await _slot(services, slot_id)))


async def _slot_orders(
    services: ServicesDep,
    request: Request,
    slot_id: int,
    side: Side,
    *,
    limit: int,
    offset: int,
) -> list[OrderOut]:
    await _slot(services, slot_id)
    async with services.pool.connection() as conn:
        orders = await store.list_orders(
            conn, side=side, timeslot_id=slot_id, limit=limit, offset=offset
        )
    config = await market_config(request, services)
    # The public projection is the one the slot's room events carry: they cannot drift.
    return [
        order_out(public_order_json(order), payment_decimals=config.payment_decimals)
        for order in orders
    ]


@router.get(
    "/api/timeslots/{slot_id}/bids",
    summary="A timeslot's bids, public: owners and meters hidden from everyone",
    responses=error_responses(*PUBLIC_ERRORS, ErrorCode.NOT_FOUND),
)
async def timeslot_bids(  # noqa: PLR0917 -- FastAPI passes parameters by name
    slot_id: int,
    principal: Public,
    services: ServicesDep,
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Ok[list[OrderOut]]:
    return ok(await _slot_orders(services, request, slot_id, Side.BUY, limit=limit, offset=offset))


@router.get(
    "/api/timeslots/{slot_id}/supplies",
    summary="A timeslot's supplies, public: owners and meters hidden from everyone",
    responses=error_responses(*PUBLIC_ERRORS, ErrorCode.NOT_FOUND),
)
async def timeslot_supplies(  # noqa: PLR0917 -- FastAPI passes parameters by name
    slot_id: int,
    principal: Public,
    services: ServicesDep,
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Ok[list[OrderOut]]:
    return ok(await _slot_orders(services, request, slot_id, Side.SELL, limit=limit, offset=offset))


@router.get(
    "/api/timeslots/{slot_id}/book",
    summary="The aggregated book: demand and supply curves (cancelled orders excluded)",
    responses=error_responses(*PUBLIC_ERRORS, ErrorCode.NOT_FOUND),
)
async def timeslot_book(slot_id: int, principal: Public, services: ServicesDep) -> Ok[BookOut]:
    slot = await _slot(services, slot_id)
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT side, price, sum(quantity_wh)::bigint AS quantity_wh,"
            " sum(sum(quantity_wh)) OVER (PARTITION BY side ORDER BY"
            " CASE WHEN side = 'buy' THEN -price ELSE price END)::bigint AS cumulative_wh"
            " FROM orders WHERE timeslot_id = %s AND status <> 'cancelled'"
            " GROUP BY side, price"
            " ORDER BY side, CASE WHEN side = 'buy' THEN -price ELSE price END",
            (slot_id,),
        )
        rows: list[dict[str, Any]] = await cur.fetchall()
    levels = {"buy": [], "sell": []}  # type: dict[str, list[BookLevel]]
    for row in rows:
        levels[row.pop("side")].append(BookLevel(**row))
    return ok(
        BookOut(
            timeslot_id=slot.id, state=slot.state.value, bids=levels["buy"], offers=levels["sell"]
        )
    )


@router.get(
    "/api/timeslots/{slot_id}/result",
    summary="A cleared timeslot's price, volume, every order's fill, and the trades",
    responses=error_responses(*PUBLIC_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
)
async def timeslot_result(slot_id: int, principal: Public, services: ServicesDep) -> Ok[ResultOut]:
    slot = await _slot(services, slot_id)
    if slot.state not in _CLEARED:
        raise ApiError(
            ErrorCode.CONFLICT,
            f"The timeslot is {slot.state.value}; it has no result yet",
            details={"reason": "not_cleared", "state": slot.state.value},
        )
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id AS order_id, side, quantity_wh, price, filled_wh, amount, status"
            " FROM orders WHERE timeslot_id = %s AND status <> 'cancelled' ORDER BY id",
            (slot_id,),
        )
        fills = [FillOut(**row) for row in await cur.fetchall()]
        trades = await store.list_trades(conn, timeslot_id=slot_id, limit=1_000_000)
    return ok(
        ResultOut(
            timeslot_id=slot.id,
            state=slot.state.value,
            price=slot.price,
            volume_wh=slot.volume_wh or 0,
            total_amount=slot.total_amount or 0,
            fills=fills,
            trades=[
                TradeOut(**{k: v for k, v in t.items() if k not in ("buyer_id", "seller_id")})
                for t in trades
            ],
        )
    )


@router.get(
    "/api/my/trades",
    summary="The caller's trades, as buyer or seller, newest slot first",
    responses=error_responses(*AUTH_ERRORS),
)
async def my_trades(
    principal: Reader, services: ServicesDep, limit: Limit = 100, offset: Offset = 0
) -> Ok[list[MyTradeOut]]:
    me = principal.user.id
    async with services.pool.connection() as conn:
        trades = await store.list_trades(conn, user_id=me, limit=limit, offset=offset)
    out = []
    for trade in trades:
        role = "buyer" if trade.pop("buyer_id") == me else "seller"
        trade.pop("seller_id")
        out.append(MyTradeOut(**trade, role=role))
    return ok(out)


@router.get(
    "/api/market/prices",
    summary="Price history: cleared slots' prices and volumes, newest first (public)",
    responses=error_responses(*PUBLIC_ERRORS),
)
async def price_history(  # noqa: PLR0917 -- FastAPI passes queries by name
    principal: Public,
    services: ServicesDep,
    request: Request,
    start: Annotated[IsoDatetime | None, Query(alias="from")] = None,
    end: Annotated[IsoDatetime | None, Query(alias="to")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Ok[list[PricePointOut]]:
    """Slots that have cleared (cleared, settling, settled), by delivery start, newest first."""
    async with services.pool.connection() as conn:
        slots = await store.list_slots(
            conn,
            states=list(_CLEARED),
            start_from=start,
            start_to=end,
            limit=limit,
            offset=offset,
            newest_first=True,
        )
    decimals = (await market_config(request, services)).payment_decimals
    return ok(
        [
            PricePointOut(
                timeslot_id=slot.id,
                start_time=slot.times.starts_at,
                end_time=slot.times.ends_at,
                state=slot.state.value,
                price=slot.price,
                price_tokens=None
                if slot.price is None
                else base_units_to_tokens(slot.price, decimals=decimals),
                volume_wh=slot.volume_wh or 0,
                cleared_at=slot.cleared_at,
            )
            for slot in slots
        ]
    )
