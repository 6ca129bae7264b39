"""The market's actions on the database: clearing a slot, and one scheduler tick.

:func:`clear_slot` runs the engine (:func:`~gridclear.cloud.market.clearing.clear`)
over a closed slot's book and writes everything it decides in one transaction:
each order's fill, amount and final status, the trades, and the slot's price,
volume and ``cleared`` state. The slot row is locked and must still be ``closed``,
so a second caller finds nothing to do and a crash leaves the slot ``closed`` with
nothing written, to be cleared again.

:func:`tick` creates the slots that should exist at a given time and moves every
slot as far along its lifecycle as that time allows, oldest first. It is safe to
run from several processes at once (each step is an ``UPDATE ... WHERE state =``);
the scheduler runs it under an advisory lock anyway, so only one does the work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from gridclear.cloud.market.clearing import OrderBook, clear
from gridclear.cloud.market.config import MarketConfig, load_config
from gridclear.cloud.market.events import EventSink, safe_emit, slot_json
from gridclear.cloud.market.store import (
    SLOT_COLUMNS,
    Conn,
    Timeslot,
    create_slots,
    move_slot,
    slot_from_row,
    slots_needing_action,
)
from gridclear.cloud.market.timeslots import (
    SlotState,
    next_state,
    slot_times,
    starts_to_create,
)

__all__ = ["Fill", "TickReport", "clear_slot", "tick"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fill:
    """One order's outcome, for its owner's notification."""

    order_id: int
    user_id: int
    side: str
    quantity_wh: int
    filled_wh: int
    amount: int
    status: str


@dataclass
class TickReport:
    """What one tick did."""

    created: int = 0
    moves: list[tuple[int, SlotState]] = field(default_factory=list)
    """(slot id, state reached), in the order they happened."""
    failed: list[int] = field(default_factory=list)
    """Slots that could not move (logged with the reason); retried next tick."""


def _array(values: NDArray[Any]) -> str:
    """A PostgreSQL array literal of integers or plain words.

    psycopg adapts a Python list element by element, which for the 100,000 fills of
    a big slot costs more than the clearing itself; joining the numbers as text is
    some ten times cheaper, and the values (integers, fixed status words) need no
    quoting.
    """
    return "{" + ",".join(map(str, values.tolist())) + "}"


async def clear_slot(conn: Conn, slot_id: int) -> tuple[Timeslot, list[Fill]] | None:
    """Clear the closed slot ``slot_id``; None when it is not (or no longer) closed.

    Returns the cleared slot and the orders that got a fill (for their owners'
    notifications).
    """
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT price_floor, price_cap FROM timeslots WHERE id = %s AND state = 'closed'"
            " FOR UPDATE",
            (slot_id,),
        )
        bounds = await cur.fetchone()
        if bounds is None:
            return None
        cur = await conn.execute(
            "SELECT id, user_id, side, quantity_wh, price,"
            " floor(extract(epoch FROM submitted_at) * 1000)::bigint AS submitted_ms"
            " FROM orders WHERE timeslot_id = %s AND status = 'active' ORDER BY id",
            (slot_id,),
        )
        rows = await cur.fetchall()
        ids = np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))
        is_buy = np.fromiter((r["side"] == "buy" for r in rows), dtype=np.bool_, count=len(rows))
        quantity = np.fromiter((r["quantity_wh"] for r in rows), dtype=np.int64, count=len(rows))
        # Owners go in so that the engine enforces the one-side rule itself (a
        # book the API could not have built, written behind its back, is refused
        # and the slot stays closed, logged, rather than clearing a self-trade).
        book = OrderBook.from_arrays(
            ids=ids,
            is_buy=is_buy,
            quantity_wh=quantity,
            price=np.fromiter((r["price"] for r in rows), dtype=np.int64, count=len(rows)),
            submitted_at=np.fromiter(
                (r["submitted_ms"] for r in rows), dtype=np.int64, count=len(rows)
            ),
            owners=np.fromiter((r["user_id"] for r in rows), dtype=np.int64, count=len(rows)),
        )
        result = clear(book, price_floor=bounds["price_floor"], price_cap=bounds["price_cap"])
        filled = result.filled_wh
        status = np.where(
            filled == 0, "unfilled", np.where(filled == quantity, "filled", "partially_filled")
        )
        if rows:
            await conn.execute(
                "UPDATE orders o SET filled_wh = u.f, amount = u.a, status = u.s,"
                " version = o.version + 1, updated_at = now()"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[])"
                " AS u(id, f, a, s)"
                " WHERE o.id = u.id",
                (_array(ids), _array(filled), _array(result.amount), _array(status)),
            )
        if result.trade_quantity_wh.size:
            user_ids = np.fromiter((r["user_id"] for r in rows), dtype=np.int64, count=len(rows))
            await conn.execute(
                "INSERT INTO trades (timeslot_id, seq, buy_order_id, sell_order_id, buyer_id,"
                " seller_id, quantity_wh, price, amount)"
                " SELECT %s, t.n, t.b, t.s, t.bu, t.su, t.q, %s, t.a FROM unnest("
                " %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::bigint[]) WITH ORDINALITY AS t(b, s, bu, su, q, a, n)",
                (
                    slot_id,
                    result.price,
                    _array(ids[result.trade_buy]),
                    _array(ids[result.trade_sell]),
                    _array(user_ids[result.trade_buy]),
                    _array(user_ids[result.trade_sell]),
                    _array(result.trade_quantity_wh),
                    _array(result.trade_amount),
                ),
            )
        cur = await conn.execute(
            "UPDATE timeslots SET state = 'cleared', price = %s, volume_wh = %s,"  # noqa: S608
            " total_amount = %s, bid_count = %s, offer_count = %s, cleared_at = now(),"
            " updated_at = now() WHERE id = %s AND state = 'closed'"
            f" RETURNING {SLOT_COLUMNS}",
            (
                result.price,
                result.volume_wh,
                result.total_amount,
                result.bid_count,
                len(rows) - result.bid_count,
                slot_id,
            ),
        )
        row = await cur.fetchone()
        assert row is not None  # the row is locked and was closed
    fills = [
        Fill(
            order_id=rows[i]["id"],
            user_id=rows[i]["user_id"],
            side=rows[i]["side"],
            quantity_wh=rows[i]["quantity_wh"],
            filled_wh=int(filled[i]),
            amount=int(result.amount[i]),
            status=str(status[i]),
        )
        for i in np.flatnonzero(filled).tolist()
    ]
    return slot_from_row(row), fills


async def _announce(events: EventSink | None, slot: Timeslot) -> None:
    # One broadcast: it reaches the slot's room too, so nobody gets a state change twice.
    await safe_emit(events, "timeslot_update", slot_json(slot))


async def _notify_fills(events: EventSink | None, slot: Timeslot, fills: list[Fill]) -> None:
    for fill in fills:
        await safe_emit(
            events,
            "user_notification",
            {
                "type": "order_filled",
                "orderId": fill.order_id,
                "side": fill.side,
                "timeslotId": slot.id,
                "quantityWh": fill.quantity_wh,
                "filledWh": fill.filled_wh,
                "price": slot.price,
                "amount": fill.amount,
                "status": fill.status,
            },
            user_id=fill.user_id,
        )


async def tick(
    conn: Conn,
    now: datetime,
    *,
    events: EventSink | None = None,
    config: MarketConfig | None = None,
) -> TickReport:
    """Create due slots and move every slot as far as ``now`` allows; see the module doc."""
    if config is None:
        config, _ = await load_config(conn)
    report = TickReport()
    starts = starts_to_create(now, config)
    report.created = await create_slots(conn, [slot_times(s, config) for s in starts], config)
    for slot in await slots_needing_action(conn, now):
        try:
            await _advance(conn, slot, now, events, report)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection is gone: the caller reconnects
        except Exception:
            # One slot that cannot move (a bug, a bad row) must not hold up the others;
            # it stays where it was, is retried on the next tick, and is reported.
            log.exception("timeslot %s could not move on from %s", slot.id, slot.state.value)
            report.failed.append(slot.id)
    return report


async def _advance(
    conn: Conn, slot: Timeslot, now: datetime, events: EventSink | None, report: TickReport
) -> None:
    current: Timeslot | None = slot
    while current is not None:
        target = next_state(current.state, current.times, now)
        if target is None:
            break
        if target is SlotState.CLEARED:
            outcome = await clear_slot(conn, current.id)
            if outcome is None:
                break
            current, fills = outcome
            log.info(
                "timeslot %s cleared: price %s, volume %s Wh",
                current.id,
                current.price,
                current.volume_wh,
            )
            await _announce(events, current)
            await _notify_fills(events, current, fills)
        else:
            current = await move_slot(conn, current.id, current.state, target)
            if current is None:
                break
            await _announce(events, current)
        report.moves.append((current.id, current.state))
