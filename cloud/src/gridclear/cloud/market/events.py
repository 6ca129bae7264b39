"""What the market tells connected apps, and the JSON it tells them.

The market emits through :class:`EventSink`, the one method of the real-time
publisher (``gridclear.cloud.realtime.EventPublisher``); :class:`NoEvents` is used
where none is configured. :func:`safe_emit` makes sure a failing publisher never
breaks an order or a clearing: the event is lost (and logged), the data is not.

The JSON shapes here are the API's (camelCase), so an app sees the same order in
``GET /api/bids/{id}`` and in a ``bid_update`` event. Who placed an order is
private: anyone may follow a slot's room, so its events carry each order as the
slot's public listing shows it (:func:`public_order_json`, the one projection both
use), and the owner gets the whole order on their private room
(:func:`publish_order`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.decimals import base_units_to_tokens, wh_to_kwh
from gridclear.cloud.market.store import OrderRecord, Timeslot

__all__ = [
    "EventSink",
    "NoEvents",
    "order_event",
    "order_json",
    "public_order_json",
    "publish_order",
    "safe_emit",
    "slot_json",
    "slot_room",
]

log = logging.getLogger(__name__)


class EventSink(Protocol):
    async def emit(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        room: str | None = None,
        user_id: int | None = None,
    ) -> None: ...


class NoEvents:
    """Emits nothing: for processes with no real-time publisher."""

    async def emit(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        room: str | None = None,
        user_id: int | None = None,
    ) -> None:
        return None


async def safe_emit(
    sink: EventSink | None,
    event: str,
    data: Mapping[str, Any],
    *,
    room: str | None = None,
    user_id: int | None = None,
) -> None:
    """Emit, logging rather than raising when the publisher fails."""
    if sink is None:
        return
    try:
        await sink.emit(event, data, room=room, user_id=user_id)
    except Exception:
        log.warning("could not emit %s (room %s, user %s)", event, room, user_id, exc_info=True)


def slot_room(slot_id: int) -> str:
    return f"timeslot:{slot_id}"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def order_json(order: OrderRecord, *, payment_decimals: int | None = None) -> dict[str, Any]:
    """An order as the API answers it.

    With ``payment_decimals`` (the market's), also the Express predecessor's
    decimals as JSON numbers: ``quantity`` (kWh), ``priceTokens`` (tokens per kWh)
    and, for a supply, ``reservePrice`` (the same; null for a bid). They are exact
    as floats: every amount here has at most 13 significant digits, and a
    double's shortest repr gives back any decimal of 15 or fewer.
    """
    data: dict[str, Any] = {
        "id": order.id,
        "timeslotId": order.timeslot_id,
        "userId": order.user_id,
        "meterId": order.meter_id,
        "side": order.side.value,
        "quantityWh": order.quantity_wh,
        "price": order.price,
        "status": order.status,
        "version": order.version,
        "filledWh": order.filled_wh,
        "amount": order.amount,
        "createdAt": _iso(order.created_at),
        "submittedAt": _iso(order.submitted_at),
        "updatedAt": _iso(order.updated_at),
    }
    if payment_decimals is not None:
        tokens = float(base_units_to_tokens(order.price, decimals=payment_decimals))
        data["quantity"] = float(wh_to_kwh(order.quantity_wh))
        data["priceTokens"] = tokens
        data["reservePrice"] = tokens if order.side is Side.SELL else None
    return data


def public_order_json(order: OrderRecord, *, payment_decimals: int | None = None) -> dict[str, Any]:
    """An order as anyone may see it: in a slot's listing and in the slot's room.

    The same fields as :func:`order_json`, with the owner (``userId``) and the
    meter (``meterId``) null: who trades is not public, what is traded is.
    """
    return {
        **order_json(order, payment_decimals=payment_decimals),
        "userId": None,
        "meterId": None,
    }


def order_event(order: OrderRecord) -> str:
    return "bid_update" if order.side is Side.BUY else "supply_update"


async def publish_order(
    sink: EventSink | None,
    order: OrderRecord,
    action: str,
    *,
    data: Mapping[str, Any] | None = None,
    payment_decimals: int | None = None,
) -> None:
    """Announce a placed, amended or cancelled order (``action``); never raises.

    The slot's room gets :func:`public_order_json`, then the owner's private room
    gets the whole order (``data`` when given, else :func:`order_json`), each with
    ``payment_decimals`` as those functions take it, both as
    ``bid_update``/``supply_update`` with ``action``. An owner who follows the slot
    receives the public copy first and their own last, so an app that keeps the
    latest copy of each order by id keeps the whole one.
    """
    event = order_event(order)
    await safe_emit(
        sink,
        event,
        {**public_order_json(order, payment_decimals=payment_decimals), "action": action},
        room=slot_room(order.timeslot_id),
    )
    whole = dict(data) if data is not None else order_json(order, payment_decimals=payment_decimals)
    await safe_emit(sink, event, {**whole, "action": action}, user_id=order.user_id)


def slot_json(slot: Timeslot) -> dict[str, Any]:
    """A timeslot as the API answers it; ``result`` is set once it is cleared."""
    times = slot.times
    cleared = slot.cleared_at is not None
    return {
        "id": slot.id,
        "state": slot.state.value,
        "startTime": _iso(times.starts_at),
        "endTime": _iso(times.ends_at),
        "opensAt": _iso(times.opens_at),
        "closesAt": _iso(times.closes_at),
        "settlesAt": _iso(times.settles_at),
        "priceFloor": slot.price_floor,
        "priceCap": slot.price_cap,
        "result": {
            "price": slot.price,
            "volumeWh": slot.volume_wh,
            "totalAmount": slot.total_amount,
            "bidCount": slot.bid_count,
            "offerCount": slot.offer_count,
            "clearedAt": _iso(slot.cleared_at),
        }
        if cleared
        else None,
    }
