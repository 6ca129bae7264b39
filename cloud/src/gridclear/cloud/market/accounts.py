"""What the market holds for one account, for the account's lifecycle.

An account that is disabled or deleted loses its open orders in slots before their
gate closure (:func:`cancel_open_orders`); one that has trades in slots not yet
settled cannot be deleted, nor lose the wallet settlement pays (:func:`unsettled_trades`).
Both run inside the caller's transaction (the account change's), and the
cancellations reach the audit log through the ``orders`` triggers, naming the
actor and the reason set here.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["cancel_open_orders", "unsettled_trades"]

Conn = AsyncConnection[DictRow]


async def cancel_open_orders(
    conn: Conn, *, user_id: int, actor_id: int | None, reason: str
) -> list[int]:
    """Cancel ``user_id``'s active orders in slots before gate closure; their ids, in order.

    Gate closure is judged as order changes judge it (``closes_at`` by the market's
    clock): orders in slots past it stay, to be cleared (their owner traded).
    ``actor_id`` and ``reason`` are what the audit entries of the cancellations
    name; they last until the transaction ends.
    """
    await conn.execute(
        "SELECT set_config('gridclear.actor_id', %s, true),"
        " set_config('gridclear.audit_reason', %s, true)",
        ("" if actor_id is None else str(actor_id), reason),
    )
    cur = await conn.execute(
        "UPDATE orders o SET status = 'cancelled', version = o.version + 1, updated_at = now()"
        " FROM timeslots s"
        " WHERE s.id = o.timeslot_id AND o.user_id = %s AND o.status = 'active'"
        " AND s.state IN ('scheduled', 'open') AND s.closes_at > market_now()"
        " RETURNING o.id",
        (user_id,),
    )
    cancelled = sorted(row["id"] for row in await cur.fetchall())
    await conn.execute(
        "SELECT set_config('gridclear.actor_id', '', true),"
        " set_config('gridclear.audit_reason', '', true)"
    )
    return cancelled


async def unsettled_trades(conn: Conn, *, user_id: int) -> int:
    """How many of ``user_id``'s trades (bought or sold) lie in slots not yet settled.

    Counts also the active orders in slots past gate closure, which will trade when
    cleared: until settled, the account must stay reachable for settlement.
    """
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM trades t JOIN timeslots s ON s.id = t.timeslot_id"
        "        WHERE (t.buyer_id = %(u)s OR t.seller_id = %(u)s) AND s.state <> 'settled')"
        "     + (SELECT count(*) FROM orders o JOIN timeslots s ON s.id = o.timeslot_id"
        "        WHERE o.user_id = %(u)s AND o.status = 'active'"
        "        AND s.state IN ('scheduled', 'open', 'closed')"
        "        AND s.closes_at <= market_now()) AS n",
        {"u": user_id},
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
