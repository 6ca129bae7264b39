"""Settlement's SQL: the ledger setup, attempts, mints and trade settlements (migration 0040),
and the registry of address lookup tables (migration 0042).

Every function takes a connection in autocommit mode or inside the caller's
transaction; the ones that must be atomic together say so and are called inside
``conn.transaction()`` by :mod:`.engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "Attempt",
    "LedgerSetup",
    "LookupTable",
    "TradeToSend",
    "load_setup",
    "lookup_tables",
    "open_attempts",
    "record_attempts",
    "record_lookup_entries",
    "registered_addresses",
    "save_setup",
    "settlement_wallets",
    "settling_slots",
]


@dataclass(frozen=True)
class LedgerSetup:
    """The ledger and mints this database settles on (``ledger_setup``), as base58."""

    genesis_hash: str
    energy_mint: str
    energy_decimals: int
    payment_mint: str
    payment_decimals: int
    oracle: str
    settlement_authority: str
    payment_mint_created: bool


@dataclass(frozen=True)
class Attempt:
    """A recorded transaction that has not reached a final state."""

    id: int
    purpose: str
    timeslot_id: int | None
    signature: str
    raw: bytes
    last_valid_block_height: int


@dataclass(frozen=True)
class TradeToSend:
    """A trade whose transfers are still to be made, with both sides' wallets."""

    trade_id: int
    timeslot_id: int
    seq: int
    buyer_wallet: str
    seller_wallet: str
    delivered_wh: int
    payment: int


async def load_setup(conn: AsyncConnection[DictRow]) -> LedgerSetup | None:
    """The ledger setup, or None before ``gridclear-cloud ledger init``."""
    cur = await conn.execute(
        "SELECT genesis_hash, energy_mint, energy_decimals, payment_mint, payment_decimals,"
        " oracle, settlement_authority, payment_mint_created FROM ledger_setup"
    )
    row = await cur.fetchone()
    return None if row is None else LedgerSetup(**row)


async def save_setup(conn: AsyncConnection[DictRow], setup: LedgerSetup) -> None:
    await conn.execute(
        "INSERT INTO ledger_setup (genesis_hash, energy_mint, energy_decimals, payment_mint,"
        " payment_decimals, oracle, settlement_authority, payment_mint_created)"
        " VALUES (%(genesis_hash)s, %(energy_mint)s, %(energy_decimals)s, %(payment_mint)s,"
        " %(payment_decimals)s, %(oracle)s, %(settlement_authority)s, %(payment_mint_created)s)",
        setup.__dict__,
    )


async def open_attempts(conn: AsyncConnection[DictRow]) -> list[Attempt]:
    cur = await conn.execute(
        "SELECT id, purpose, timeslot_id, signature, raw, last_valid_block_height"
        " FROM ledger_attempts WHERE state = 'open' ORDER BY id"
    )
    return [Attempt(**row) for row in await cur.fetchall()]


async def record_attempts(
    conn: AsyncConnection[DictRow], rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Insert attempts (keys: purpose, timeslot_id, signature, raw, blockhash,
    last_valid_block_height) in one statement; their ids, in order."""
    if not rows:
        return []
    cur = await conn.execute(
        "INSERT INTO ledger_attempts (purpose, timeslot_id, signature, raw, blockhash,"
        " last_valid_block_height)"
        " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bytea[], %s::text[],"
        " %s::bigint[]) RETURNING id, signature",
        (
            [row["purpose"] for row in rows],
            [row["timeslot_id"] for row in rows],
            [row["signature"] for row in rows],
            [row["raw"] for row in rows],
            [row["blockhash"] for row in rows],
            [row["last_valid_block_height"] for row in rows],
        ),
    )
    ids = {str(found["signature"]): int(found["id"]) for found in await cur.fetchall()}
    return [ids[str(row["signature"])] for row in rows]


@dataclass(frozen=True)
class LookupTable:
    """A lookup table of the registry: its address, whether its creation landed, its fill."""

    address: str
    recent_slot: int
    created: bool
    entries: int


async def lookup_tables(conn: AsyncConnection[DictRow], authority: str) -> list[LookupTable]:
    """Every table ``authority`` created or is creating, oldest first, with its entry count
    (entries of extensions still open included: they will take room when they land)."""
    cur = await conn.execute(
        "SELECT t.address, t.recent_slot, a.state = 'landed' AS created,"
        " (SELECT count(*) FROM lookup_table_entries e WHERE e.lookup_table = t.address)"
        " AS entries FROM lookup_tables t JOIN ledger_attempts a ON a.id = t.attempt_id"
        " WHERE t.authority = %s ORDER BY t.created_at, t.address",
        (authority,),
    )
    return [
        LookupTable(
            str(row["address"]), int(row["recent_slot"]), bool(row["created"]), int(row["entries"])
        )
        for row in await cur.fetchall()
    ]


async def registered_addresses(
    conn: AsyncConnection[DictRow], addresses: Sequence[str]
) -> dict[str, tuple[str, bool]]:
    """Of ``addresses``, those placed in a table: address → (table, whether it landed)."""
    cur = await conn.execute(
        "SELECT e.address, e.lookup_table, a.state = 'landed' AS landed"
        " FROM lookup_table_entries e JOIN ledger_attempts a ON a.id = e.attempt_id"
        " WHERE e.address = ANY(%s)",
        (list(addresses),),
    )
    return {
        str(row["address"]): (str(row["lookup_table"]), bool(row["landed"]))
        for row in await cur.fetchall()
    }


async def record_lookup_entries(
    conn: AsyncConnection[DictRow], table: str, addresses: Sequence[str], attempt_id: int
) -> None:
    """Record that the attempt ``attempt_id`` puts ``addresses`` into ``table``."""
    await conn.execute(
        "INSERT INTO lookup_table_entries (address, lookup_table, attempt_id)"
        " SELECT unnest(%s::text[]), %s, %s",
        (list(addresses), table, attempt_id),
    )


async def settling_slots(conn: AsyncConnection[DictRow]) -> list[int]:
    cur = await conn.execute("SELECT id FROM timeslots WHERE state = 'settling' ORDER BY starts_at")
    return [int(row["id"]) for row in await cur.fetchall()]


async def settlement_wallets(
    conn: AsyncConnection[DictRow], user_ids: Sequence[int]
) -> dict[int, str]:
    """Each user's settlement wallet: the one of their latest approval that landed."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (user_id) user_id, wallet FROM approvals"
        " WHERE state = 'landed' AND user_id = ANY(%s) ORDER BY user_id, id DESC",
        (list(user_ids),),
    )
    return {int(row["user_id"]): str(row["wallet"]) for row in await cur.fetchall()}
