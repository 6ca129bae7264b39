"""Single-use links mailed to an account: email verification and password reset.

A link carries a random token (256 bits); only its SHA-256 is stored, beside the
account, the purpose, the address it was mailed to and its expiry. Issuing a link
voids the account's earlier unused links of the same purpose, so only the newest
works. Using one marks it used in the same transaction as the change it
authorises (the caller's), after locking its row: of two concurrent uses, one
wins and the other sees it used.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from gridclear.cloud.errors import GridclearCloudError

__all__ = ["LinkPurpose", "LinkRefusedError", "UsedLink", "issue_link", "use_link"]

Conn = AsyncConnection[DictRow]
LinkPurpose = Literal["verify_email", "reset_password"]

_MARKER = {"verify_email": "gcv_", "reset_password": "gcp_"}
_MAX_TOKEN_CHARS = 128


class LinkRefusedError(GridclearCloudError):
    """The link does not work; ``code`` says why: ``unknown``, ``expired`` or ``used``.

    ``used`` includes a link voided by a newer one, and one whose address is no
    longer the account's.
    """

    code = "link_refused"

    def __init__(self, reason: Literal["unknown", "expired", "used"]) -> None:
        super().__init__(f"the link is {reason}")
        self.code = reason


@dataclass(frozen=True)
class UsedLink:
    """What a used link authorises: its account, and the address it was mailed to."""

    user_id: int
    email: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_link(
    conn: Conn,
    *,
    user_id: int,
    purpose: LinkPurpose,
    email: str,
    now: datetime,
    ttl: timedelta,
) -> str:
    """A new token for ``user_id``; earlier unused ones of ``purpose`` stop working.

    Run it inside the caller's transaction (it writes two statements).
    """
    token = _MARKER[purpose] + secrets.token_urlsafe(32)
    await conn.execute(
        "UPDATE account_tokens SET used_at = %s"
        " WHERE user_id = %s AND purpose = %s AND used_at IS NULL",
        (now, user_id, purpose),
    )
    await conn.execute(
        "INSERT INTO account_tokens (user_id, purpose, token_hash, email, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (user_id, purpose, _digest(token), email, now, now + ttl),
    )
    return token


async def use_link(conn: Conn, *, token: str, purpose: LinkPurpose, now: datetime) -> UsedLink:
    """Mark the link used and return what it authorises; :class:`LinkRefusedError` if not.

    Must run inside the transaction that makes the authorised change, so that the
    link is used exactly when the change commits. A link of another purpose is
    ``unknown``; a link mailed to an address the account no longer has is ``used``.
    """
    if not token.startswith(_MARKER[purpose]) or len(token) > _MAX_TOKEN_CHARS:
        raise LinkRefusedError("unknown")
    cur = await conn.execute(
        "SELECT t.id, t.user_id, t.email, t.expires_at, t.used_at, u.email AS current_email,"
        " u.deleted_at"
        " FROM account_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = %s AND t.purpose = %s FOR UPDATE OF t, u",
        (_digest(token), purpose),
    )
    row = await cur.fetchone()
    if row is None:
        raise LinkRefusedError("unknown")
    if row["used_at"] is not None:
        raise LinkRefusedError("used")
    if row["expires_at"] <= now:
        raise LinkRefusedError("expired")
    if row["deleted_at"] is not None or row["current_email"] != row["email"]:
        raise LinkRefusedError("used")
    await conn.execute("UPDATE account_tokens SET used_at = %s WHERE id = %s", (now, row["id"]))
    return UsedLink(user_id=row["user_id"], email=row["email"])
