"""Sessions: refresh-token families in PostgreSQL, revocation marks in Redis.

A sign-in starts a family with one refresh token. Refreshing uses that token
up and adds the next one to the family (rotation). If a token that was already
used comes back, someone holds a copy: the whole family is revoked, so neither
the thief nor the user can go on with it (the user signs in again).

Access tokens name their family (``sid``). Revoking a family also writes a mark
in Redis for as long as an access token can live, which the API checks on
every request: a logout takes effect at once, not when the token expires.
Only SHA-256 digests of refresh tokens are stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from redis.asyncio import Redis

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "RefreshError",
    "Rotated",
    "SessionRevocations",
    "revoke_family",
    "revoke_user_sessions",
    "rotate",
    "start_session",
]

Conn = AsyncConnection[DictRow]
_MARKER = "gcr_"


class RefreshError(GridclearCloudError):
    """The refresh token is refused; ``code`` says why.

    ``reused`` means the family has just been revoked; ``family_id`` and
    ``user_id`` name it then, for the audit log.
    """

    code = "refresh_refused"

    def __init__(
        self,
        reason: Literal["unknown", "revoked", "expired", "reused"],
        *,
        family_id: uuid.UUID | None = None,
        user_id: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = reason
        self.family_id = family_id
        self.user_id = user_id


@dataclass(frozen=True)
class Rotated:
    """A new refresh token in an existing family."""

    user_id: int
    family_id: uuid.UUID
    refresh_token: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _insert(
    conn: Conn, *, family_id: uuid.UUID, user_id: int, now: datetime, ttl: timedelta
) -> str:
    token = _MARKER + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO refresh_tokens (family_id, user_id, token_hash, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (family_id, user_id, _digest(token), now, now + ttl),
    )
    return token


async def start_session(
    conn: Conn, *, user_id: int, now: datetime, ttl: timedelta
) -> tuple[uuid.UUID, str]:
    """A new family and its first refresh token."""
    family_id = uuid.uuid4()
    token = await _insert(conn, family_id=family_id, user_id=user_id, now=now, ttl=ttl)
    return family_id, token


async def rotate(conn: Conn, *, token: str, now: datetime, ttl: timedelta) -> Rotated:
    """Use ``token`` up and return its successor; raises :class:`RefreshError`.

    A reuse revokes the family in the same transaction before raising, so the
    revocation is committed even though the call fails.
    """
    reused: tuple[uuid.UUID, int] | None = None
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id, family_id, user_id, expires_at, used_at, revoked_at"
            " FROM refresh_tokens WHERE token_hash = %s FOR UPDATE",
            (_digest(token),),
        )
        row = await cur.fetchone()
        if row is None:
            raise RefreshError("unknown")
        if row["revoked_at"] is not None:
            raise RefreshError("revoked", family_id=row["family_id"], user_id=row["user_id"])
        if row["used_at"] is not None:
            await revoke_family(conn, family_id=row["family_id"], now=now)
            reused = (row["family_id"], row["user_id"])
        elif row["expires_at"] <= now:
            raise RefreshError("expired", family_id=row["family_id"], user_id=row["user_id"])
        else:
            await conn.execute(
                "UPDATE refresh_tokens SET used_at = %s WHERE id = %s", (now, row["id"])
            )
            new = await _insert(
                conn, family_id=row["family_id"], user_id=row["user_id"], now=now, ttl=ttl
            )
            return Rotated(user_id=row["user_id"], family_id=row["family_id"], refresh_token=new)
    raise RefreshError("reused", family_id=reused[0], user_id=reused[1])


async def revoke_family(conn: Conn, *, family_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s WHERE family_id = %s AND revoked_at IS NULL",
        (now, family_id),
    )


async def revoke_user_sessions(
    conn: Conn, *, user_id: int, now: datetime, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Revoke every live family of a user except ``keep``; returns the revoked ones."""
    cur = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s"
        " WHERE user_id = %s AND revoked_at IS NULL AND family_id IS DISTINCT FROM %s"
        " RETURNING family_id",
        (now, user_id, keep),
    )
    return sorted({row["family_id"] for row in await cur.fetchall()}, key=str)


class SessionRevocations:
    """Marks ``{prefix}revoked-session:{sid}`` that outlive every access token of a session."""

    def __init__(self, *, redis: Redis, prefix: str, access_ttl: timedelta) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = int(access_ttl.total_seconds()) + 60

    def key(self, session_id: uuid.UUID) -> str:
        """The Redis key that marks ``session_id`` revoked while it exists."""
        return f"{self._prefix}revoked-session:{session_id}"

    async def revoke(self, *session_ids: uuid.UUID) -> None:
        if not session_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.set(self.key(sid), b"1", ex=self._ttl_s)
            await pipe.execute()

    async def is_revoked(self, session_id: uuid.UUID) -> bool:
        return bool(await self._redis.exists(self.key(session_id)))
