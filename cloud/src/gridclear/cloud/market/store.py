"""SQL for timeslots, orders and trades: every write one short transaction.

Concurrency rules, all enforced by PostgreSQL rather than by process-local locks,
so several API instances and schedulers can run at once:

- A slot's state changes only by ``UPDATE ... WHERE state = <from>``: of two
  schedulers attempting one step, one updates a row and the other none.
- Placing, amending or cancelling an order locks its slot ``FOR SHARE`` and checks
  that it is open and that its ``closes_at`` is still ahead of the market's clock
  (``market_now()``, in the same statement), whatever the stored state says: a
  scheduler that lags never lets an order in after gate closure. Gate closure's
  ``UPDATE`` waits for those transactions and they for it, so an order is either
  in the book the clearing reads or refused with ``TIMESLOT_EXPIRED``; never
  accepted and then ignored.
- The market's clock lives in the database (``market_clock``, migration 0034): the
  acting scheduler records its market time and speed on every tick
  (:func:`record_clock`), and ``market_now()`` runs it forward, so the API and the
  scheduler agree on the time even when the market is accelerated for a demo.
- Amendments carry the version they saw; the row is locked ``FOR UPDATE`` and a
  different current version is a conflict (optimistic concurrency).
- An ``Idempotency-Key`` is unique per user (a unique index); the request body's
  SHA-256 is stored with it, so a retry gets the first order back and a different
  body under the same key is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.timeslots import TRANSITIONS, SlotState, SlotTimes

__all__ = [
    "SLOT_COLUMNS",
    "AccountInactiveError",
    "Conn",
    "IdempotencyMismatchError",
    "MarketError",
    "MeterNotAllowedError",
    "OrderNotFoundError",
    "OrderRecord",
    "OrderRequest",
    "OrderStateError",
    "SlotNotFoundError",
    "SlotNotOpenError",
    "StaleVersionError",
    "Timeslot",
    "amend_order",
    "cancel_order",
    "create_slots",
    "get_order",
    "get_slot",
    "list_orders",
    "list_slots",
    "list_trades",
    "move_slot",
    "place_order",
    "place_orders",
    "record_clock",
    "slot_from_row",
    "slots_needing_action",
]

Conn = AsyncConnection[DictRow]


class MarketError(Exception):
    """Base of the market's refusals; ``reason`` is a stable code for metrics."""

    reason = "market"


class AccountInactiveError(MarketError):
    """The account placing an order does not exist or is disabled."""

    reason = "account_inactive"


class SlotNotFoundError(MarketError):
    reason = "slot_not_found"


class SlotNotOpenError(MarketError):
    reason = "slot_not_open"


class OrderNotFoundError(MarketError):
    reason = "order_not_found"


class OrderStateError(MarketError):
    """The order is no longer active (cancelled, or cleared)."""

    reason = "order_not_active"


class StaleVersionError(MarketError):
    reason = "stale_version"

    def __init__(self, current: int) -> None:
        super().__init__(f"the order is at version {current}")
        self.current = current


class MeterNotAllowedError(MarketError):
    reason = "meter_not_allowed"


class IdempotencyMismatchError(MarketError):
    reason = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Timeslot:
    id: int
    state: SlotState
    times: SlotTimes
    price_floor: int
    price_cap: int
    price: int | None
    volume_wh: int | None
    total_amount: int | None
    bid_count: int | None
    offer_count: int | None
    cleared_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    timeslot_id: int
    user_id: int
    meter_id: int
    side: Side
    quantity_wh: int
    price: int
    status: str
    version: int
    filled_wh: int
    amount: int
    created_at: datetime
    submitted_at: datetime
    updated_at: datetime


SLOT_COLUMNS = (
    "id, state, starts_at, ends_at, opens_at, closes_at, settles_at, price_floor, price_cap,"
    " price, volume_wh, total_amount, bid_count, offer_count, cleared_at, updated_at"
)
_ORDER_COLUMNS = (
    "id, timeslot_id, user_id, meter_id, side, quantity_wh, price, status, version,"
    " filled_wh, amount, created_at, submitted_at, updated_at"
)


def slot_from_row(row: dict[str, Any]) -> Timeslot:
    total = row["total_amount"]
    return Timeslot(
        id=row["id"],
        state=SlotState(row["state"]),
        times=SlotTimes(
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            opens_at=row["opens_at"],
            closes_at=row["closes_at"],
            settles_at=row["settles_at"],
        ),
        price_floor=row["price_floor"],
        price_cap=row["price_cap"],
        price=row["price"],
        volume_wh=row["volume_wh"],
        total_amount=None if total is None else int(total),
        bid_count=row["bid_count"],
        offer_count=row["offer_count"],
        cleared_at=row["cleared_at"],
        updated_at=row["updated_at"],
    )


def _order(row: dict[str, Any]) -> OrderRecord:
    return OrderRecord(**{**row, "side": Side(row["side"])})


# ---------------------------------------------------------------- timeslots


async def create_slots(conn: Conn, starts: list[SlotTimes], config: MarketConfig) -> int:
    """Create the slots not yet there (``scheduled``); returns how many were new.

    Delivery intervals never overlap: a slot is created only from the end of the
    latest existing one, so after a change of slot length the new slots begin
    where the old ones end (at the next boundary of the new length).
    """
    if not starts:
        return 0
    cur = await conn.execute(
        "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at,"
        " price_floor, price_cap)"
        " SELECT s, e, o, c, st, %s, %s FROM unnest(%s::timestamptz[], %s::timestamptz[],"
        " %s::timestamptz[], %s::timestamptz[], %s::timestamptz[]) AS u(s, e, o, c, st)"
        " WHERE s >= COALESCE((SELECT max(ends_at) FROM timeslots), '-infinity')"
        " ON CONFLICT (starts_at) DO NOTHING",
        (
            config.price_floor,
            config.price_cap,
            [t.starts_at for t in starts],
            [t.ends_at for t in starts],
            [t.opens_at for t in starts],
            [t.closes_at for t in starts],
            [t.settles_at for t in starts],
        ),
    )
    return cur.rowcount


async def get_slot(conn: Conn, slot_id: int) -> Timeslot:
    cur = await conn.execute(f"SELECT {SLOT_COLUMNS} FROM timeslots WHERE id = %s", (slot_id,))  # noqa: S608
    row = await cur.fetchone()
    if row is None:
        raise SlotNotFoundError(f"no timeslot {slot_id}")
    return slot_from_row(row)


async def list_slots(
    conn: Conn,
    *,
    states: list[SlotState] | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
    newest_first: bool = False,
    before_gate: bool = False,
) -> list[Timeslot]:
    """Slots by start; ``before_gate``: only those whose gate closure is still ahead."""
    order = "DESC" if newest_first else "ASC"
    cur = await conn.execute(
        f"SELECT {SLOT_COLUMNS} FROM timeslots"  # noqa: S608 (fixed names)
        " WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s))"
        " AND (NOT %(before_gate)s OR closes_at > market_now())"
        " AND (%(from)s::timestamptz IS NULL OR starts_at >= %(from)s)"
        " AND (%(to)s::timestamptz IS NULL OR starts_at < %(to)s)"
        f" ORDER BY starts_at {order} LIMIT %(limit)s OFFSET %(offset)s",
        {
            "states": [s.value for s in states] if states else None,
            "from": start_from,
            "to": start_to,
            "limit": limit,
            "offset": offset,
            "before_gate": before_gate,
        },
    )
    return [slot_from_row(row) for row in await cur.fetchall()]


async def slots_needing_action(conn: Conn, now: datetime) -> list[Timeslot]:
    """Slots whose state may change at ``now``, by start (oldest first)."""
    cur = await conn.execute(
        f"SELECT {SLOT_COLUMNS} FROM timeslots WHERE"  # noqa: S608 (fixed names)
        " (state = 'scheduled' AND opens_at <= %(now)s)"
        " OR (state = 'scheduled' AND closes_at <= %(now)s)"
        " OR (state = 'open' AND closes_at <= %(now)s)"
        " OR state = 'closed'"
        " OR (state = 'cleared' AND settles_at <= %(now)s)"
        " ORDER BY starts_at, id",
        {"now": now},
    )
    return [slot_from_row(row) for row in await cur.fetchall()]


async def move_slot(
    conn: Conn, slot_id: int, source: SlotState, target: SlotState
) -> Timeslot | None:
    """Move a slot from ``source`` to ``target``; None if it was not in ``source``.

    Idempotent by construction: the update names the state it leaves, so of two
    callers only one gets the row back.
    """
    if target not in TRANSITIONS[source]:
        raise ValueError(f"a slot cannot go from {source} to {target}")
    cur = await conn.execute(
        f"UPDATE timeslots SET state = %s, updated_at = now() WHERE id = %s AND state = %s"  # noqa: S608
        f" RETURNING {SLOT_COLUMNS}",
        (target.value, slot_id, source.value),
    )
    row = await cur.fetchone()
    return None if row is None else slot_from_row(row)


async def record_clock(conn: Conn, *, now: datetime, speed: float) -> None:
    """Record that market time is ``now`` at this moment, running at ``speed``.

    Every gate-closure check afterwards reads market time as ``now`` plus the
    database time elapsed since, times ``speed`` (``market_now()`` in SQL).
    """
    if now.tzinfo is None:
        raise ValueError("market time must be timezone-aware")
    await conn.execute(
        "INSERT INTO market_clock (market_at, db_at, speed) VALUES (%s, clock_timestamp(), %s)"
        " ON CONFLICT (singleton) DO UPDATE SET market_at = excluded.market_at,"
        " db_at = excluded.db_at, speed = excluded.speed",
        (now, speed),
    )


# ---------------------------------------------------------------- orders


async def _lock_open_slot(conn: Conn, slot_id: int) -> Timeslot:
    """Lock the slot ``FOR SHARE``; refuse it unless open and before its gate closure.

    Gate closure is judged by ``closes_at`` against the market's clock here, not
    only by the stored state: a slot the scheduler has not closed yet (it lags or
    is down) takes no order change past its gate.
    """
    cur = await conn.execute(
        f"SELECT {SLOT_COLUMNS}, closes_at > market_now() AS before_gate"  # noqa: S608
        " FROM timeslots WHERE id = %s FOR SHARE",
        (slot_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise SlotNotFoundError(f"no timeslot {slot_id}")
    before_gate = row.pop("before_gate")
    slot = slot_from_row(row)
    if slot.state is not SlotState.OPEN:
        raise SlotNotOpenError(f"timeslot {slot_id} is {slot.state.value}, not open")
    if not before_gate:
        raise SlotNotOpenError(f"timeslot {slot_id} is past its gate closure")
    return slot


def _check_terms(slot: Timeslot, config: MarketConfig, quantity_wh: int, price: int) -> None:
    problem = config.quantity_problem(quantity_wh)
    if problem is None and not slot.price_floor <= price <= slot.price_cap:
        problem = (
            f"price must be {slot.price_floor} to {slot.price_cap} base units per kWh"
            " in this timeslot"
        )
    if problem is None:
        problem = config.price_problem(price)
    if problem is not None:
        raise ValueError(problem)


async def _existing_for_key(
    conn: Conn, user_id: int, key: str, request_hash: bytes, side: Side
) -> OrderRecord | None:
    cur = await conn.execute(
        f"SELECT {_ORDER_COLUMNS}, request_hash FROM orders"  # noqa: S608
        " WHERE user_id = %s AND idempotency_key = %s",
        (user_id, key),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    stored = row.pop("request_hash")
    if bytes(stored) != request_hash or row["side"] != side.value:
        raise IdempotencyMismatchError("this Idempotency-Key was used for a different request")
    return _order(row)


@dataclass(frozen=True)
class OrderRequest:
    """One order to place, as :func:`place_order` takes it."""

    config: MarketConfig
    user_id: int
    side: Side
    timeslot_id: int
    meter_id: int
    quantity_wh: int
    price: int
    idempotency_key: str | None = None
    request_hash: bytes = b""


def _same_order(row: dict[str, Any], request: OrderRequest) -> bool:
    return bool(
        row["user_id"] == request.user_id
        and row["idempotency_key"] == request.idempotency_key
        and row["timeslot_id"] == request.timeslot_id
        and row["meter_id"] == request.meter_id
        and row["side"] == request.side.value
        and row["quantity_wh"] == request.quantity_wh
        and row["price"] == request.price
    )


async def place_orders(
    conn: Conn, requests: list[OrderRequest]
) -> list[tuple[OrderRecord, bool] | Exception]:
    """Place many orders (from concurrent requests), one outcome per request, in order.

    Exactly :func:`place_order` for each, in far fewer round trips: the common
    case of every request (slot open, meter the caller's, terms in bounds, a new
    idempotency key) is one statement for all, with the slots locked ``FOR
    SHARE`` as usual and time priority in the order given. Whatever that
    statement did not insert (a retry, a refusal) then goes through
    :func:`place_order` alone, which says exactly why. Requests for identical
    orders are interchangeable, so returned rows are matched to requests by
    their fields.
    """
    outcomes: list[tuple[OrderRecord, bool] | Exception | None] = [None] * len(requests)
    candidates: list[int] = []
    for index, request in enumerate(requests):
        problem = request.config.quantity_problem(request.quantity_wh)
        problem = problem or request.config.price_problem(request.price)
        if problem is not None:
            outcomes[index] = ValueError(problem)
        else:
            candidates.append(index)
    if candidates:
        chosen = [requests[i] for i in candidates]
        cur = await conn.execute(
            "WITH i AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"  # noqa: S608 (fixed names)
            " %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::bytea[], %s::int[])"
            " AS t(slot, usr, meter, side, qty, price, key, hash, ord)),"
            " s AS (SELECT id, price_floor, price_cap FROM timeslots"
            " WHERE id IN (SELECT slot FROM i) AND state = 'open'"
            " AND closes_at > market_now() FOR SHARE)"
            " INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price,"
            " idempotency_key, request_hash)"
            " SELECT i.slot, i.usr, i.meter, i.side, i.qty, i.price, i.key, i.hash"
            " FROM i JOIN s ON s.id = i.slot AND i.price BETWEEN s.price_floor AND s.price_cap"
            " JOIN users u ON u.id = i.usr AND NOT u.disabled"
            " WHERE EXISTS (SELECT 1 FROM meters m WHERE m.id = i.meter AND m.owner_id = i.usr"
            " AND m.role = ANY(CASE WHEN i.side = 'buy' THEN ARRAY['import', 'both']"
            " ELSE ARRAY['export', 'both'] END))"
            " ORDER BY i.ord"
            " ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL"
            f" DO NOTHING RETURNING {_ORDER_COLUMNS}, idempotency_key",
            (
                [r.timeslot_id for r in chosen],
                [r.user_id for r in chosen],
                [r.meter_id for r in chosen],
                [r.side.value for r in chosen],
                [r.quantity_wh for r in chosen],
                [r.price for r in chosen],
                [r.idempotency_key for r in chosen],
                [r.request_hash if r.idempotency_key is not None else None for r in chosen],
                list(range(len(chosen))),
            ),
        )
        rows = await cur.fetchall()
        # Rows come back in insertion order in practice; matching by fields does not
        # depend on it.
        waiting = list(candidates)
        for row in rows:
            for position, index in enumerate(waiting):
                if _same_order(row, requests[index]):
                    del row["idempotency_key"]
                    outcomes[index] = (_order(row), True)
                    del waiting[position]
                    break
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            request = requests[index]
            try:
                outcomes[index] = await place_order(
                    conn,
                    config=request.config,
                    user_id=request.user_id,
                    side=request.side,
                    timeslot_id=request.timeslot_id,
                    meter_id=request.meter_id,
                    quantity_wh=request.quantity_wh,
                    price=request.price,
                    idempotency_key=request.idempotency_key,
                    request_hash=request.request_hash,
                )
            except Exception as exc:  # that request's failure alone: the others stand
                outcomes[index] = exc
    return [outcome for outcome in outcomes if outcome is not None]


async def place_order(
    conn: Conn,
    *,
    config: MarketConfig,
    user_id: int,
    side: Side,
    timeslot_id: int,
    meter_id: int,
    quantity_wh: int,
    price: int,
    idempotency_key: str | None = None,
    request_hash: bytes = b"",
) -> tuple[OrderRecord, bool]:
    """Place one order; returns it and whether it is new (False: an idempotent retry).

    The exact path, one check at a time, for what :func:`place_orders` could not
    place in its one statement, and for callers placing a single order.

    Raises :class:`AccountInactiveError`, :class:`SlotNotFoundError`,
    :class:`SlotNotOpenError`, :class:`MeterNotAllowedError`,
    :class:`IdempotencyMismatchError`, or ``ValueError`` for quantity or price
    outside the market's bounds.
    """
    problem = config.quantity_problem(quantity_wh) or config.price_problem(price)
    if problem is not None:
        raise ValueError(problem)
    wanted = ["import", "both"] if side is Side.BUY else ["export", "both"]
    values = {
        "slot": timeslot_id,
        "user": user_id,
        "meter": meter_id,
        "side": side.value,
        "quantity": quantity_wh,
        "price": price,
        "key": idempotency_key,
        "hash": request_hash if idempotency_key is not None else None,
    }
    # Each check on its own, so that a refusal says exactly why. The common case of
    # many orders at once is place_orders' single statement, which falls back here.
    async with conn.transaction():
        cur = await conn.execute("SELECT disabled FROM users WHERE id = %s", (user_id,))
        account = await cur.fetchone()
        if account is None or account["disabled"]:
            raise AccountInactiveError("The account is not active")
        if idempotency_key is not None:
            found = await _existing_for_key(conn, user_id, idempotency_key, request_hash, side)
            if found is not None:
                return found, False
        slot = await _lock_open_slot(conn, timeslot_id)
        _check_terms(slot, config, quantity_wh, price)
        cur = await conn.execute(
            "SELECT 1 FROM meters WHERE id = %s AND owner_id = %s AND role = ANY(%s)",
            (meter_id, user_id, wanted),
        )
        if await cur.fetchone() is None:
            what = "import" if side is Side.BUY else "export"
            raise MeterNotAllowedError(
                f"meter {meter_id} is not yours or cannot {what}: a "
                f"{'bid' if side is Side.BUY else 'supply'} needs a meter you own with role "
                f"{' or '.join(wanted)}"
            )
        cur = await conn.execute(
            "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price,"  # noqa: S608 (fixed names)
            " idempotency_key, request_hash)"
            " VALUES (%(slot)s, %(user)s, %(meter)s, %(side)s, %(quantity)s, %(price)s,"
            " %(key)s, %(hash)s)"
            " ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL"
            f" DO NOTHING RETURNING {_ORDER_COLUMNS}",
            values,
        )
        row = await cur.fetchone()
    if row is not None:
        return _order(row), True
    # A concurrent request with the same key won the insert: answer with its order.
    assert idempotency_key is not None
    found = await _existing_for_key(conn, user_id, idempotency_key, request_hash, side)
    assert found is not None
    return found, False


async def get_order(conn: Conn, order_id: int) -> OrderRecord:
    cur = await conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s", (order_id,))  # noqa: S608
    row = await cur.fetchone()
    if row is None:
        raise OrderNotFoundError(f"no order {order_id}")
    return _order(row)


async def _lock_own_order(
    conn: Conn, order_id: int, user_id: int, side: Side, version: int | None
) -> OrderRecord:
    cur = await conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s AND user_id = %s AND side = %s"  # noqa: S608
        " FOR UPDATE",
        (order_id, user_id, side.value),
    )
    row = await cur.fetchone()
    if row is None:
        raise OrderNotFoundError(f"no order {order_id}")
    order = _order(row)
    await _lock_open_slot(conn, order.timeslot_id)
    if order.status != "active":
        raise OrderStateError(f"the order is {order.status}")
    if version is not None and version != order.version:
        raise StaleVersionError(order.version)
    return order


async def amend_order(
    conn: Conn,
    *,
    config: MarketConfig,
    order_id: int,
    user_id: int,
    side: Side,
    version: int,
    quantity_wh: int | None,
    price: int | None,
) -> OrderRecord:
    """Amend an open order seen at ``version``; it loses its time priority.

    Raises :class:`OrderNotFoundError` (also for another user's order),
    :class:`SlotNotOpenError`, :class:`OrderStateError`, :class:`StaleVersionError`,
    or ``ValueError`` for terms outside the bounds.
    """
    async with conn.transaction():
        order = await _lock_own_order(conn, order_id, user_id, side, version)
        slot = await get_slot(conn, order.timeslot_id)
        new_quantity = order.quantity_wh if quantity_wh is None else quantity_wh
        new_price = order.price if price is None else price
        _check_terms(slot, config, new_quantity, new_price)
        cur = await conn.execute(
            "UPDATE orders SET quantity_wh = %s, price = %s, version = version + 1,"  # noqa: S608 (fixed names)
            " submitted_at = clock_timestamp(), updated_at = now()"
            f" WHERE id = %s RETURNING {_ORDER_COLUMNS}",
            (new_quantity, new_price, order_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return _order(row)


async def cancel_order(
    conn: Conn, *, order_id: int, user_id: int, side: Side, version: int | None
) -> OrderRecord:
    """Cancel an open order (at ``version`` when given); same errors as :func:`amend_order`."""
    async with conn.transaction():
        await _lock_own_order(conn, order_id, user_id, side, version)
        cur = await conn.execute(
            "UPDATE orders SET status = 'cancelled', version = version + 1, updated_at = now()"  # noqa: S608 (fixed names)
            f" WHERE id = %s RETURNING {_ORDER_COLUMNS}",
            (order_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return _order(row)


async def list_orders(
    conn: Conn,
    *,
    side: Side | None = None,
    user_id: int | None = None,
    timeslot_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OrderRecord]:
    cur = await conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders"  # noqa: S608 (fixed names)
        " WHERE (%(side)s::text IS NULL OR side = %(side)s)"
        " AND (%(user)s::bigint IS NULL OR user_id = %(user)s)"
        " AND (%(slot)s::bigint IS NULL OR timeslot_id = %(slot)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s",
        {
            "side": side.value if side else None,
            "user": user_id,
            "slot": timeslot_id,
            "status": status,
            "limit": limit,
            "offset": offset,
        },
    )
    return [_order(row) for row in await cur.fetchall()]


async def list_trades(
    conn: Conn,
    *,
    timeslot_id: int | None = None,
    user_id: int | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Trades of a slot or of a user (as buyer or seller), newest slot first."""
    cur = await conn.execute(
        "SELECT id, timeslot_id, seq, buy_order_id, sell_order_id, buyer_id, seller_id,"
        " quantity_wh, price, amount, created_at FROM trades"
        " WHERE (%(slot)s::bigint IS NULL OR timeslot_id = %(slot)s)"
        " AND (%(user)s::bigint IS NULL OR buyer_id = %(user)s OR seller_id = %(user)s)"
        " ORDER BY timeslot_id DESC, seq LIMIT %(limit)s OFFSET %(offset)s",
        {"slot": timeslot_id, "user": user_id, "limit": limit, "offset": offset},
    )
    return list(await cur.fetchall())
