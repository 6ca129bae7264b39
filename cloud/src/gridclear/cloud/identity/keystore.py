"""API keys in PostgreSQL: create (shown once), list, revoke, authenticate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.identity.apikeys import key_matches, key_prefix, new_key
from gridclear.cloud.identity.roles import Scope

__all__ = ["ApiKey", "authenticate_key", "create_key", "list_keys", "revoke_key"]

Conn = AsyncConnection[DictRow]
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiKey:
    """A key as its owner sees it later: the prefix, never the secret."""

    id: int
    user_id: int
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


# Fixed column list spliced into queries (no user input ever reaches it). The
# client-chosen expiry is read through in_calendar (migration 0033): a stored value
# Python cannot represent must not break the owner's key list.
_COLUMNS = (
    "id, user_id, name, prefix, scopes, created_at,"
    " in_calendar(expires_at) AS expires_at, last_used_at, revoked_at"
)


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=frozenset(Scope(s) for s in row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(
    conn: Conn,
    *,
    user_id: int,
    name: str,
    scopes: frozenset[Scope],
    expires_at: datetime | None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key and its secret text (the only time it exists outside the caller).

    The row is written and read back in one transaction: if reading it back fails,
    nothing is stored (on an autocommit connection the INSERT would already be
    committed when its RETURNING row failed to load).
    """
    for _ in range(3):
        made = new_key()
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO api_keys (user_id, name, prefix, key_hash, scopes,"  # noqa: S608
                    " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_COLUMNS}",
                    (
                        user_id,
                        name,
                        made.prefix,
                        made.key_hash,
                        sorted(s.value for s in scopes),
                        now,
                        expires_at,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                key = _key(row)
        except psycopg.errors.UniqueViolation:
            continue  # a 48-bit prefix collided: draw another
        return key, made.key
    raise RuntimeError("could not draw an unused API key prefix")


async def list_keys(conn: Conn, *, user_id: int) -> list[ApiKey]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE user_id = %s ORDER BY id",  # noqa: S608
        (user_id,),
    )
    return [_key(row) for row in await cur.fetchall()]


async def revoke_key(conn: Conn, *, user_id: int, key_id: int, now: datetime) -> ApiKey | None:
    """Revoke one of the user's keys; None if the user has no such key. Idempotent."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s)"  # noqa: S608
        f" WHERE id = %s AND user_id = %s RETURNING {_COLUMNS}",
        (now, key_id, user_id),
    )
    row = await cur.fetchone()
    return _key(row) if row else None


async def authenticate_key(conn: Conn, *, key: str, now: datetime) -> ApiKey | None:
    """The live key ``key`` names, or None (malformed, unknown, wrong, revoked, expired)."""
    prefix = key_prefix(key)
    if prefix is None:
        return None
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE prefix = %s",  # noqa: S608
        (prefix,),
    )
    row = await cur.fetchone()
    if row is None or not key_matches(key, bytes(row["key_hash"])):
        return None
    found = _key(row)
    if found.revoked_at is not None or (found.expires_at is not None and found.expires_at <= now):
        return None
    if found.last_used_at is None or now - found.last_used_at > _LAST_USED_RESOLUTION:
        # Written at most once a minute per key, so that busy integrations do not turn
        # every read into a write.
        await conn.execute("UPDATE api_keys SET last_used_at = %s WHERE id = %s", (now, found.id))
    return found
