"""Settlement's SQL: the ledger setup, attempts, mints and trade settlements (migration 0040).

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
    "TradeToSend",
    "load_setup",
    "open_attempts",
    "record_attempts",
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
    last_valid_block_height); their ids, in order."""
    ids: list[int] = []
    async with conn.cursor() as cur:
        for row in rows:
            await cur.execute(
                "INSERT INTO ledger_attempts (purpose, timeslot_id, signature, raw, blockhash,"
                " last_valid_block_height) VALUES (%(purpose)s, %(timeslot_id)s, %(signature)s,"
                " %(raw)s, %(blockhash)s, %(last_valid_block_height)s) RETURNING id",
                row,
            )
            found = await cur.fetchone()
            assert found is not None
            ids.append(int(found["id"]))
    return ids


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
