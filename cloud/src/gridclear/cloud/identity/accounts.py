"""Users and their wallets in PostgreSQL.

Every function takes an open connection (autocommit) and opens its own
transaction where it writes more than one row, or writes and then reads back,
so callers cannot leave an account half made, nor a row stored by a request
that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.batching import Coalescer
from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.storage.pool import Pool

__all__ = [
    "AccountConflictError",
    "LastAdminError",
    "User",
    "UserLoader",
    "add_credentials",
    "count_admins",
    "create_password_user",
    "get_password_hash",
    "get_user",
    "get_user_by_email",
    "get_users",
    "link_wallet",
    "list_users",
    "set_disabled",
    "set_password_hash",
    "set_role",
    "update_profile",
    "user_for_wallet",
]

Conn = AsyncConnection[DictRow]


class AccountConflictError(GridclearCloudError):
    """The email or wallet already belongs to an account."""

    code = "account_conflict"


class LastAdminError(GridclearCloudError):
    """The change would leave no active admin."""

    code = "last_admin"


@dataclass(frozen=True)
class User:
    """An account as the API shows it (never with its password hash)."""

    id: int
    email: str | None
    display_name: str | None
    role: Role
    disabled: bool
    created_at: datetime
    has_password: bool
    wallets: tuple[str, ...]

    @property
    def wallet_address(self) -> str | None:
        """The first linked wallet: the seed's ``walletAddress``."""
        return self.wallets[0] if self.wallets else None


_SELECT_USER = """
SELECT u.id, u.email, u.display_name, u.role, u.disabled, u.created_at,
       u.password_hash IS NOT NULL AS has_password,
       COALESCE(array_agg(w.address ORDER BY w.linked_at, w.address)
                FILTER (WHERE w.address IS NOT NULL), '{}') AS wallets
FROM users u LEFT JOIN wallets w ON w.user_id = u.id
"""


def _user(row: dict[str, Any]) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        disabled=row["disabled"],
        created_at=row["created_at"],
        has_password=row["has_password"],
        wallets=tuple(row["wallets"]),
    )


async def get_user(conn: Conn, user_id: int) -> User | None:
    cur = await conn.execute(_SELECT_USER + " WHERE u.id = %s GROUP BY u.id", (user_id,))
    row = await cur.fetchone()
    return _user(row) if row else None


async def get_users(conn: Conn, user_ids: Sequence[int]) -> dict[int, User]:
    """The users among ``user_ids`` that exist, by id."""
    cur = await conn.execute(
        _SELECT_USER + " WHERE u.id = ANY(%s) GROUP BY u.id", (list(user_ids),)
    )
    return {row["id"]: _user(row) for row in await cur.fetchall()}


class UserLoader:
    """Users by id for authenticating requests: one query for all asked at once."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._batches: Coalescer[int, User | None] = Coalescer(
            self._load, max_batch=256, max_concurrent=1
        )

    async def _load(self, user_ids: list[int]) -> list[User | None]:
        async with self._pool.connection() as conn:
            found = await get_users(conn, sorted(set(user_ids)))
        return [found.get(user_id) for user_id in user_ids]

    async def get(self, user_id: int) -> User | None:
        """The user as stored now (never cached), or None."""
        return await self._batches.submit(user_id)

    @property
    def closed(self) -> bool:
        return self._batches.closed and self._batches.idle

    async def aclose(self) -> None:
        """Answer the loads queued, then refuse new ones."""
        await self._batches.aclose()


async def get_user_by_email(conn: Conn, email: str) -> User | None:
    cur = await conn.execute(_SELECT_USER + " WHERE u.email = %s GROUP BY u.id", (email,))
    row = await cur.fetchone()
    return _user(row) if row else None


async def get_password_hash(conn: Conn, user_id: int) -> str | None:
    cur = await conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,))
    row = await cur.fetchone()
    return row["password_hash"] if row else None


async def user_for_wallet(conn: Conn, address: str) -> tuple[User, bool]:
    """The account that owns ``address``, created as a participant if none does.

    Returns the user and whether it was created now. Two sign-ins racing for a
    new wallet end with one account.
    """
    cur = await conn.execute("SELECT user_id FROM wallets WHERE address = %s", (address,))
    row = await cur.fetchone()
    if row is None:
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO users (role) VALUES (%s) RETURNING id", (Role.PARTICIPANT,)
                )
                created = await cur.fetchone()
                assert created is not None
                await conn.execute(
                    "INSERT INTO wallets (address, user_id) VALUES (%s, %s)",
                    (address, created["id"]),
                )
        except psycopg.errors.UniqueViolation:
            cur = await conn.execute("SELECT user_id FROM wallets WHERE address = %s", (address,))
            row = await cur.fetchone()
            assert row is not None
        else:
            user = await get_user(conn, created["id"])
            assert user is not None
            return user, True
    user = await get_user(conn, row["user_id"])
    assert user is not None
    return user, False


async def create_password_user(
    conn: Conn,
    *,
    email: str,
    password_hash: str,
    display_name: str | None,
    role: Role = Role.PARTICIPANT,
) -> User:
    """A new password account; :class:`AccountConflictError` when the email is taken."""
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO users (email, password_hash, display_name, role)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (email, password_hash, display_name, role),
            )
            row = await cur.fetchone()
            assert row is not None
            user = await get_user(conn, row["id"])
    except psycopg.errors.UniqueViolation as exc:
        raise AccountConflictError("an account with this email exists") from exc
    assert user is not None
    return user


async def add_credentials(conn: Conn, *, user_id: int, email: str, password_hash: str) -> None:
    """Give a wallet-only account an email and password (once)."""
    try:
        cur = await conn.execute(
            "UPDATE users SET email = %s, password_hash = %s, updated_at = now()"
            " WHERE id = %s AND email IS NULL",
            (email, password_hash, user_id),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise AccountConflictError("an account with this email exists") from exc
    if cur.rowcount != 1:
        raise AccountConflictError("this account already has an email and password")


async def set_password_hash(conn: Conn, *, user_id: int, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
        (password_hash, user_id),
    )


async def link_wallet(conn: Conn, *, user_id: int, address: str) -> None:
    """Link ``address`` to the account; :class:`AccountConflictError` if another owns it."""
    cur = await conn.execute(
        "INSERT INTO wallets (address, user_id) VALUES (%s, %s)"
        " ON CONFLICT (address) DO NOTHING RETURNING user_id",
        (address, user_id),
    )
    if await cur.fetchone() is None:
        cur = await conn.execute("SELECT user_id FROM wallets WHERE address = %s", (address,))
        row = await cur.fetchone()
        if row is None or row["user_id"] != user_id:
            raise AccountConflictError("this wallet belongs to another account")


async def _lock_active_admins(conn: Conn) -> set[int]:
    """The active admins' ids, their rows locked until the transaction ends.

    Every change that could leave no active admin takes this lock first, in id
    order (so that concurrent changes queue rather than deadlock), then counts.
    """
    cur = await conn.execute(
        "SELECT id FROM users WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE"
    )
    return {row["id"] for row in await cur.fetchall()}


async def set_disabled(conn: Conn, *, user_id: int, disabled: bool) -> bool | None:
    """Disable or enable an account; returns whether it was disabled before (None: no user).

    A disabled account can neither sign in nor use its tokens, keys or real-time
    connections. Disabling the last active admin raises :class:`LastAdminError`;
    the active admins are locked first, so two admins disabling each other at
    once cannot both succeed.
    """
    async with conn.transaction():
        admins = await _lock_active_admins(conn)
        cur = await conn.execute("SELECT disabled FROM users WHERE id = %s FOR UPDATE", (user_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        if disabled and admins == {user_id}:
            raise LastAdminError("this is the last admin; promote another first")
        await conn.execute(
            "UPDATE users SET disabled = %s, updated_at = now() WHERE id = %s", (disabled, user_id)
        )
        return bool(row["disabled"])


async def update_profile(conn: Conn, *, user_id: int, display_name: str | None) -> None:
    await conn.execute(
        "UPDATE users SET display_name = %s, updated_at = now() WHERE id = %s",
        (display_name, user_id),
    )


async def set_role(conn: Conn, *, user_id: int, role: Role) -> Role | None:
    """Change a user's role; returns the previous role, or None for no such user.

    :class:`LastAdminError` when it would demote the last active admin. The check
    and the change are one transaction holding every active admin's row, so two
    admins demoting each other at once cannot both pass it: the second waits for
    the first, then counts again.
    """
    async with conn.transaction():
        admins = await _lock_active_admins(conn)
        cur = await conn.execute("SELECT role FROM users WHERE id = %s FOR UPDATE", (user_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        if role is not Role.ADMIN and admins == {user_id}:
            raise LastAdminError("this is the last active admin")
        await conn.execute(
            "UPDATE users SET role = %s, updated_at = now() WHERE id = %s", (role, user_id)
        )
        return Role(row["role"])


async def count_admins(conn: Conn) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM users WHERE role = 'admin' AND NOT disabled"
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def list_users(conn: Conn, *, limit: int, offset: int) -> list[User]:
    cur = await conn.execute(
        _SELECT_USER + " GROUP BY u.id ORDER BY u.id LIMIT %s OFFSET %s", (limit, offset)
    )
    return [_user(row) for row in await cur.fetchall()]
