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
    "DeletedAccount",
    "LastAdminError",
    "User",
    "UserLoader",
    "WalletUnlinkError",
    "add_credentials",
    "count_admins",
    "create_password_user",
    "delete_account",
    "get_password_hash",
    "get_user",
    "get_user_by_email",
    "get_users",
    "link_wallet",
    "list_users",
    "lock_user",
    "mark_email_verified",
    "set_disabled",
    "set_password_hash",
    "set_role",
    "unlink_wallet",
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


class WalletUnlinkError(GridclearCloudError):
    """The wallet cannot be unlinked; ``code``: ``not_linked`` or ``only_way_in``."""

    code = "wallet_unlink_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.code = reason


@dataclass(frozen=True)
class DeletedAccount:
    """What deleting an account removed that other systems may hold a copy of."""

    user_id: int
    wallets: tuple[str, ...]
    sessions: tuple[Any, ...]
    """The refresh-token families (session ids) that were live, to mark revoked."""


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
    email_verified: bool = False
    deleted: bool = False

    @property
    def wallet_address(self) -> str | None:
        """The first linked wallet: the seed's ``walletAddress``."""
        return self.wallets[0] if self.wallets else None


_SELECT_USER = """
SELECT u.id, u.email, u.display_name, u.role, u.disabled, u.created_at,
       u.password_hash IS NOT NULL AS has_password,
       u.email_verified_at IS NOT NULL AS email_verified, u.deleted_at IS NOT NULL AS deleted,
       COALESCE(array_agg(w.address ORDER BY w.linked_at, w.address)
                FILTER (WHERE w.address IS NOT NULL), '{}') AS wallets
FROM users u LEFT JOIN wallets w ON w.user_id = u.id
"""


_SELECT_BY_WALLET = (
    _SELECT_USER + " WHERE u.id = (SELECT user_id FROM wallets WHERE address = %s) GROUP BY u.id"  # noqa: S608 (fixed text)
)


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
        email_verified=row["email_verified"],
        deleted=row["deleted"],
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
    new wallet end with one account. A known wallet costs one statement, a new
    one three: sign-in is the busiest unauthenticated path.
    """
    cur = await conn.execute(
        _SELECT_BY_WALLET,
        (address,),
    )
    row = await cur.fetchone()
    if row is not None:
        return _user(row), False
    try:
        # One statement, so one implicit transaction: a wallet another sign-in
        # linked first aborts the account row with it.
        cur = await conn.execute(
            "WITH created AS (INSERT INTO users (role) VALUES (%s) RETURNING id)"
            " INSERT INTO wallets (address, user_id) SELECT %s, id FROM created"
            " RETURNING user_id",
            (Role.PARTICIPANT, address),
        )
        created = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        created = None
    cur = await conn.execute(
        _SELECT_BY_WALLET,
        (address,),
    )
    row = await cur.fetchone()
    assert row is not None
    return _user(row), created is not None


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
    enabling a deleted account, :class:`AccountConflictError`;
    the active admins are locked first, so two admins disabling each other at
    once cannot both succeed.
    """
    async with conn.transaction():
        admins = await _lock_active_admins(conn)
        cur = await conn.execute(
            "SELECT disabled, deleted_at FROM users WHERE id = %s FOR UPDATE", (user_id,)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        if not disabled and row["deleted_at"] is not None:
            raise AccountConflictError("this account was deleted; it cannot be enabled")
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


async def lock_user(conn: Conn, user_id: int) -> User | None:
    """The user, its row locked until the transaction ends (call inside one)."""
    cur = await conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
    if await cur.fetchone() is None:
        return None
    return await get_user(conn, user_id)


async def mark_email_verified(conn: Conn, *, user_id: int, email: str) -> bool:
    """Record that ``email`` is proven, if it is still the account's; whether it was."""
    cur = await conn.execute(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, now()),"
        " updated_at = now() WHERE id = %s AND email = %s",
        (user_id, email),
    )
    return cur.rowcount == 1


async def unlink_wallet(conn: Conn, *, user_id: int, address: str) -> None:
    """Unlink ``address`` from the account; :class:`WalletUnlinkError` when refused.

    ``only_way_in`` when it is the account's last wallet and the account has no
    password: it could no longer sign in. Call inside a transaction: the account
    row is locked, so two unlinks at once cannot both pass the check.
    """
    user = await lock_user(conn, user_id)
    if user is None or address not in user.wallets:
        raise WalletUnlinkError("not_linked")
    if not user.has_password and len(user.wallets) == 1:
        raise WalletUnlinkError("only_way_in")
    await conn.execute(
        "DELETE FROM wallets WHERE address = %s AND user_id = %s", (address, user_id)
    )


async def delete_account(conn: Conn, *, user_id: int, now: datetime) -> DeletedAccount | None:
    """Remove what identifies the person behind ``user_id``; None if no such account.

    The row stays (disabled, ``deleted_at`` set) as the pseudonym that settled
    trades, orders and the audit log go on naming; email, password, name, email
    proof, wallets, API keys, sessions and mailed links are removed, meters lose
    their owner, and audit entries that named the person's email or wallets name
    ``user:<id>`` instead, without the client address. :class:`LastAdminError`
    for the last active admin. Call inside the transaction that also cancels the
    account's orders (the caller's).
    """
    admins = await _lock_active_admins(conn)
    user = await lock_user(conn, user_id)
    if user is None or user.deleted:
        return None
    if admins == {user_id}:
        raise LastAdminError("this is the last admin; promote another first")
    cur = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = %s WHERE user_id = %s AND revoked_at IS NULL"
        " RETURNING family_id",
        (now, user_id),
    )
    families = tuple(sorted({row["family_id"] for row in await cur.fetchall()}, key=str))
    names = [name for name in (user.email, *user.wallets) if name is not None]
    await conn.execute(
        "UPDATE audit_log SET subject = %s, ip = NULL"
        " WHERE subject = ANY(%s) OR (actor_id = %s AND ip IS NOT NULL)",
        (f"user:{user_id}", names, user_id),
    )
    for statement in (
        "DELETE FROM refresh_tokens WHERE user_id = %s",
        "DELETE FROM api_keys WHERE user_id = %s",
        "DELETE FROM account_tokens WHERE user_id = %s",
        "DELETE FROM wallets WHERE user_id = %s",
        "UPDATE meters SET owner_id = NULL, updated_at = now() WHERE owner_id = %s",
        "UPDATE users SET email = NULL, password_hash = NULL, display_name = NULL,"
        " email_verified_at = NULL, disabled = true, deleted_at = now(), updated_at = now()"
        " WHERE id = %s",
    ):
        await conn.execute(statement, (user_id,))
    return DeletedAccount(user_id=user_id, wallets=user.wallets, sessions=families)
