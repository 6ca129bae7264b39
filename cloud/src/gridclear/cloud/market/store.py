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

Placing an order has one definition of its rules, :data:`_PLACEMENT` (one SQL
statement for any number of orders, which says for each order the first rule it
breaks or inserts it), used alike by :func:`place_orders` for the API's batches
and by :func:`place_order` (a batch of one). The rules, in the order they are
judged, each with its refusal:

1. quantity and price within the market's bounds: :class:`TermsOutOfBoundsError`
   (checked in Python before the statement, from the configuration);
2. the account exists and is not disabled: :class:`AccountInactiveError`;
3. an ``Idempotency-Key`` already used: the first order again, or
   :class:`IdempotencyMismatchError` for another request (so a retry is answered
   even after gate closure);
4. the slot exists: :class:`SlotNotFoundError`;
5. it is open and before its gate closure (:data:`_GATE_REFUSAL`, shared with
   amendments and cancellations): :class:`SlotNotOpenError`;
6. the price is within the slot's floor and cap: :class:`TermsOutOfBoundsError`;
7. the meter is the caller's and can import (a bid) or export (a supply):
   :class:`MeterNotAllowedError`;
8. the account has no active order on the other side of the slot (self-trade
   prevention, docs/MARKET.md): :class:`SelfTradeError`. Two orders of one
   batch breaking it refuse the later; two concurrent transactions are kept
   apart by the exclusion constraint of migration 0051 (the batch that loses is
   placed again, and then sees the winner).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.errors import GridclearCloudError
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
    "MeterRequiredError",
    "OrderNotFoundError",
    "OrderRecord",
    "OrderRequest",
    "OrderStateError",
    "SelfTradeError",
    "SlotNotFoundError",
    "SlotNotOpenError",
    "StaleVersionError",
    "TermsOutOfBoundsError",
    "Timeslot",
    "amend_order",
    "cancel_order",
    "count_slots_by_state",
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
    "sole_meter",
]

Conn = AsyncConnection[DictRow]


class MarketError(GridclearCloudError):
    """Base of the market's refusals; ``code`` is a stable code for metrics and the API."""

    code = "market"


class AccountInactiveError(MarketError):
    """The account placing an order does not exist or is disabled."""

    code = "account_inactive"


class SlotNotFoundError(MarketError):
    code = "slot_not_found"


class SlotNotOpenError(MarketError):
    """The slot is not open, or is past its gate closure by the market's clock."""

    code = "slot_not_open"


class TermsOutOfBoundsError(MarketError):
    """Quantity or price outside the market's bounds or the slot's floor and cap."""

    code = "out_of_bounds"


class OrderNotFoundError(MarketError):
    code = "order_not_found"


class OrderStateError(MarketError):
    """The order is no longer active (cancelled, or cleared)."""

    code = "order_not_active"


class StaleVersionError(MarketError):
    code = "stale_version"

    def __init__(self, current: int) -> None:
        super().__init__(f"the order is at version {current}")
        self.current = current


class MeterNotAllowedError(MarketError):
    code = "meter_not_allowed"


class IdempotencyMismatchError(MarketError):
    code = "idempotency_key_reused"


class SelfTradeError(MarketError):
    """The account has an active order on the other side of the slot."""

    code = "self_trade"


class MeterRequiredError(MarketError):
    """No meter was named and the account has no single meter that fits the side."""

    code = "meter_required"

    def __init__(self, message: str, *, candidates: int) -> None:
        super().__init__(message)
        self.candidates = candidates


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
_ORDER_FIELDS = tuple(name.strip() for name in _ORDER_COLUMNS.split(","))


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


async def count_slots_by_state(conn: Conn) -> dict[SlotState, int]:
    """How many slots are in each state (every state present, zero when none)."""
    cur = await conn.execute("SELECT state, count(*) AS n FROM timeslots GROUP BY state")
    counts = {str(row["state"]): int(row["n"]) for row in await cur.fetchall()}
    return {state: counts.get(state.value, 0) for state in SlotState}


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


_GATE_REFUSAL = (
    "CASE WHEN s.state <> 'open' THEN 'slot_not_open'"
    " WHEN s.closes_at <= market_now() THEN 'past_gate' END"
)
"""Rule 5 for the slot row ``s``: why it takes no order change now, or NULL.

Gate closure is judged by ``closes_at`` against the market's clock, not only by
the stored state: a slot the scheduler has not closed yet (it lags or is down)
takes no order change past its gate. Evaluated on the row locked ``FOR SHARE``,
so a gate closure committed while the lock waited is seen.
"""


def _slot_refused(slot_id: int, refusal: str, state: str | None) -> MarketError:
    """The exception for a slot refusal code of :data:`_GATE_REFUSAL` or ``slot_not_found``."""
    if refusal == "slot_not_found":
        return SlotNotFoundError(f"no timeslot {slot_id}")
    if refusal == "past_gate":
        return SlotNotOpenError(f"timeslot {slot_id} is past its gate closure")
    return SlotNotOpenError(f"timeslot {slot_id} is {state}, not open")


async def _lock_open_slot(conn: Conn, slot_id: int) -> Timeslot:
    """Lock the slot ``FOR SHARE``; refuse it unless open and before its gate closure."""
    cur = await conn.execute(
        f"SELECT {SLOT_COLUMNS}, {_GATE_REFUSAL} AS refusal"  # noqa: S608 (fixed names)
        " FROM timeslots s WHERE id = %s FOR SHARE",
        (slot_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise _slot_refused(slot_id, "slot_not_found", None)
    refusal = row.pop("refusal")
    if refusal is not None:
        raise _slot_refused(slot_id, refusal, row["state"])
    return slot_from_row(row)


def _slot_price_problem(price: int, price_floor: int, price_cap: int) -> str | None:
    """Rule 6: why ``price`` is outside the slot's floor and cap, or None."""
    if price_floor <= price <= price_cap:
        return None
    return f"price must be {price_floor} to {price_cap} base units per kWh in this timeslot"


def _check_terms(slot: Timeslot, config: MarketConfig, quantity_wh: int, price: int) -> None:
    problem = config.quantity_problem(quantity_wh)
    problem = problem or _slot_price_problem(price, slot.price_floor, slot.price_cap)
    problem = problem or config.price_problem(price)
    if problem is not None:
        raise TermsOutOfBoundsError(problem)


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


_PLACEMENT = (
    "WITH i AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"  # noqa: S608 (fixed names)
    " %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::bytea[], %s::int[])"
    " AS t(slot, usr, meter, side, qty, price, key, hash, ord)),"
    " s AS (SELECT id, state, closes_at, price_floor, price_cap FROM timeslots"
    " WHERE id IN (SELECT slot FROM i) FOR SHARE),"
    " v AS (SELECT i.*, s.state, s.price_floor, s.price_cap, COALESCE("
    "CASE WHEN u.id IS NULL OR u.disabled THEN 'account_inactive'"
    " WHEN k.used THEN 'key_used'"
    " WHEN s.id IS NULL THEN 'slot_not_found' END,"
    f" {_GATE_REFUSAL},"
    " CASE WHEN i.price NOT BETWEEN s.price_floor AND s.price_cap THEN 'out_of_bounds'"
    " WHEN NOT EXISTS (SELECT 1 FROM meters m WHERE m.id = i.meter AND m.owner_id = i.usr"
    " AND m.role = ANY(CASE WHEN i.side = 'buy' THEN ARRAY['import', 'both']"
    " ELSE ARRAY['export', 'both'] END)) THEN 'meter_not_allowed'"
    " WHEN EXISTS (SELECT 1 FROM orders o WHERE o.timeslot_id = i.slot AND o.user_id = i.usr"
    " AND o.side <> i.side AND o.status = 'active') THEN 'self_trade' END) AS refusal"
    " FROM i LEFT JOIN users u ON u.id = i.usr LEFT JOIN s ON s.id = i.slot"
    # LIMIT 1 keeps this a probe of the key's unique index per order, never a scan.
    " LEFT JOIN LATERAL (SELECT true AS used FROM orders o"
    " WHERE o.user_id = i.usr AND o.idempotency_key = i.key LIMIT 1) k ON true),"
    " placed AS (INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price,"
    " idempotency_key, request_hash)"
    " SELECT slot, usr, meter, side, qty, price, key, hash FROM v WHERE refusal IS NULL"
    " ORDER BY ord"
    " ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL"
    f" DO NOTHING RETURNING {_ORDER_COLUMNS}, idempotency_key)"
    " SELECT NULL::int AS ord, NULL::text AS refusal, NULL::text AS slot_state,"
    f" NULL::bigint AS slot_floor, NULL::bigint AS slot_cap, placed.* FROM placed"
    " UNION ALL SELECT ord, refusal, state, price_floor, price_cap"
    + ", NULL" * (len(_ORDER_COLUMNS.split(",")) + 1)
    + " FROM v WHERE refusal IS NOT NULL"
)
"""Every rule after the first for a batch of orders, in one statement.

Each order gets the code of the first rule it breaks (``refusal``), or is
inserted; the slots are locked ``FOR SHARE`` as the statement reads them, and
orders are inserted in the order given (time priority). Answers the inserted
rows (``ord`` NULL) and one row per refused order (``ord`` its position). An
order whose key another one took meanwhile is neither (``ON CONFLICT DO
NOTHING``): its caller reads that key's order.
"""


def _refusal(row: dict[str, Any], request: OrderRequest) -> MarketError | None:
    """The exception for a refused row of :data:`_PLACEMENT`; None for ``key_used``."""
    refusal: str = row["refusal"]
    if refusal == "key_used":
        return None
    if refusal == "account_inactive":
        return AccountInactiveError("The account is not active")
    if refusal == "out_of_bounds":
        problem = _slot_price_problem(request.price, row["slot_floor"], row["slot_cap"])
        return TermsOutOfBoundsError(problem or "price outside the timeslot's bounds")
    if refusal == "self_trade":
        return _self_trade(request)
    if refusal == "meter_not_allowed":
        wanted = "import or both" if request.side is Side.BUY else "export or both"
        what = "import" if request.side is Side.BUY else "export"
        return MeterNotAllowedError(
            f"meter {request.meter_id} is not yours or cannot {what}: a "
            f"{'bid' if request.side is Side.BUY else 'supply'} needs a meter you own with role "
            f"{wanted}"
        )
    return _slot_refused(request.timeslot_id, refusal, row["slot_state"])


def _self_trade(request: OrderRequest) -> SelfTradeError:
    other = "supply" if request.side is Side.BUY else "bid"
    return SelfTradeError(
        f"you have an active {other} in timeslot {request.timeslot_id}: an account's orders in"
        " one timeslot are all on one side (cancel it first)"
    )


_PLACE_ATTEMPTS = 5
"""Placements of one batch when concurrent ones keep breaking the one-side rule."""


async def _place(
    conn: Conn,
    requests: list[OrderRequest],
    candidates: list[int],
    outcomes: list[tuple[OrderRecord, bool] | Exception | None],
) -> list[int]:
    """Run :data:`_PLACEMENT` for ``requests[i] for i in candidates``, filling ``outcomes``.

    Returns the indexes of the requests to answer with their key's order.
    """
    chosen = [requests[i] for i in candidates]
    cur = await conn.execute(
        _PLACEMENT,
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
    replays: list[int] = []
    waiting = list(candidates)
    for row in rows:
        if row["ord"] is not None:
            index = candidates[row["ord"]]
            refused = _refusal(row, requests[index])
            if refused is None:
                replays.append(index)
            else:
                outcomes[index] = refused
            waiting.remove(index)
    # Rows come back in insertion order in practice; matching by fields does not
    # depend on it.
    for row in rows:
        if row["ord"] is not None:
            continue
        for position, index in enumerate(waiting):
            if _same_order(row, requests[index]):
                outcomes[index] = (_order({k: row[k] for k in _ORDER_FIELDS}), True)
                del waiting[position]
                break
    # Neither inserted nor refused: another request took its key meanwhile.
    return replays + waiting


def _one_side_per_batch(
    requests: list[OrderRequest],
    candidates: list[int],
    outcomes: list[tuple[OrderRecord, bool] | Exception | None],
) -> list[int]:
    """Rule 8 within one batch: an order facing an earlier one of the same account
    and slot on the other side is refused (the statement cannot see its own rows)."""
    first_side: dict[tuple[int, int], Side] = {}
    kept = []
    for index in candidates:
        request = requests[index]
        side = first_side.setdefault((request.user_id, request.timeslot_id), request.side)
        if side is request.side:
            kept.append(index)
        else:
            outcomes[index] = _self_trade(request)
    return kept


async def place_orders(
    conn: Conn, requests: list[OrderRequest]
) -> list[tuple[OrderRecord, bool] | Exception]:
    """Place many orders (from concurrent requests), one outcome per request, in order.

    Each outcome is the order and whether it is new (False: an idempotent retry),
    or that request's refusal (the module's rules): one statement for all, plus
    one query per request whose ``Idempotency-Key`` was already used. Requests
    for identical orders are interchangeable, so inserted rows are matched to
    requests by their fields.
    """
    outcomes: list[tuple[OrderRecord, bool] | Exception | None] = [None] * len(requests)
    candidates: list[int] = []
    for index, request in enumerate(requests):
        problem = request.config.quantity_problem(request.quantity_wh)
        problem = problem or request.config.price_problem(request.price)
        if problem is not None:
            outcomes[index] = TermsOutOfBoundsError(problem)
        else:
            candidates.append(index)
    candidates = _one_side_per_batch(requests, candidates, outcomes)
    replays: list[int] = []
    for attempt in range(_PLACE_ATTEMPTS):
        if not candidates:
            break
        try:
            replays = await _place(conn, requests, candidates, outcomes)
            break
        except psycopg.errors.ExclusionViolation:
            # A concurrent transaction placed the other side for one of these
            # accounts and committed while this statement waited: nothing of the
            # statement was stored; placed again, it sees that order.
            if attempt == _PLACE_ATTEMPTS - 1:
                raise
    for index in replays:
        request = requests[index]
        assert request.idempotency_key is not None
        try:
            found = await _existing_for_key(
                conn, request.user_id, request.idempotency_key, request.request_hash, request.side
            )
            if found is None:
                raise RuntimeError("an Idempotency-Key in use has no order")
            outcomes[index] = (found, False)
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

    :func:`place_orders` with a batch of one: the same rules, the same refusals
    (:class:`TermsOutOfBoundsError`, :class:`AccountInactiveError`,
    :class:`IdempotencyMismatchError`, :class:`SlotNotFoundError`,
    :class:`SlotNotOpenError`, :class:`MeterNotAllowedError`).
    """
    (outcome,) = await place_orders(
        conn,
        [
            OrderRequest(
                config=config,
                user_id=user_id,
                side=side,
                timeslot_id=timeslot_id,
                meter_id=meter_id,
                quantity_wh=quantity_wh,
                price=price,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        ],
    )
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


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
    version: int | None,
    quantity_wh: int | None,
    price: int | None,
) -> OrderRecord:
    """Amend an open order (seen at ``version``, when given); it loses its time priority.

    Raises :class:`OrderNotFoundError` (also for another user's order),
    :class:`SlotNotOpenError`, :class:`OrderStateError`, :class:`StaleVersionError`,
    or :class:`TermsOutOfBoundsError`.
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


async def sole_meter(conn: Conn, *, user_id: int, side: Side) -> int:
    """The one meter of ``user_id`` that fits ``side`` (import for a bid, export for a
    supply: rule 7), for an order that names none; :class:`MeterRequiredError` when
    the account has none or several."""
    roles = ["import", "both"] if side is Side.BUY else ["export", "both"]
    cur = await conn.execute(
        "SELECT id FROM meters WHERE owner_id = %s AND role = ANY(%s) ORDER BY id LIMIT 2",
        (user_id, roles),
    )
    rows = await cur.fetchall()
    if len(rows) == 1:
        meter_id: int = rows[0]["id"]
        return meter_id
    what = "import" if side is Side.BUY else "export"
    if not rows:
        raise MeterRequiredError(
            f"you own no meter that can {what}: a {'bid' if side is Side.BUY else 'supply'}"
            " needs one (an operator binds meters to accounts)",
            candidates=0,
        )
    raise MeterRequiredError(
        f"you own several meters that can {what}: name one with meterId", candidates=len(rows)
    )


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
