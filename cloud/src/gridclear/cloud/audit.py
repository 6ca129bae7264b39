"""The audit log: who did what to identities and when, from where.

Sign-ins and their failures, registrations, logouts, refresh-token reuse,
password changes, role changes, wallet links and API keys created or revoked.
Rows are only ever inserted; admins read them through ``GET /api/admin/audit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

__all__ = ["AuditEntry", "AuditEvent", "query_audit", "record_audit"]

Conn = AsyncConnection[DictRow]


class AuditEvent(StrEnum):
    """What happened. Stable names: dashboards and alerts filter on them."""

    WALLET_SIGN_IN = "auth.wallet.sign_in"
    PASSWORD_SIGN_IN = "auth.password.sign_in"  # noqa: S105 (a name, not a secret)
    REGISTER = "auth.register"
    REFRESH_REUSE = "auth.refresh.reuse"
    LOGOUT = "auth.logout"
    PASSWORD_CHANGE = "auth.password.change"  # noqa: S105 (a name, not a secret)
    WALLET_LINK = "user.wallet.link"
    CREDENTIALS_ADD = "user.credentials.add"
    ROLE_CHANGE = "user.role.change"
    ACCOUNT_DISABLE = "user.disable"
    ACCOUNT_ENABLE = "user.enable"
    ADMIN_CREATE = "user.admin.create"
    API_KEY_CREATE = "apikey.create"
    API_KEY_REVOKE = "apikey.revoke"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    event: str
    outcome: Literal["success", "failure"]
    actor_id: int | None
    subject: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


async def record_audit(
    conn: Conn,
    *,
    event: AuditEvent,
    outcome: Literal["success", "failure"],
    actor_id: int | None,
    subject: str | None = None,
    ip: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one entry. ``subject`` is what was acted on (a wallet, an email, a key id)."""
    await conn.execute(
        "INSERT INTO audit_log (at, event, outcome, actor_id, subject, ip, request_id, details)"
        " VALUES (COALESCE(%s, now()), %s, %s, %s, %s, %s, %s, %s)",
        (at, event.value, outcome, actor_id, subject, ip, request_id, Jsonb(details or {})),
    )


async def query_audit(
    conn: Conn,
    *,
    event: str | None = None,
    actor_id: int | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first; page with ``before_id`` (the last id of the previous page)."""
    cur = await conn.execute(
        "SELECT id, at, event, outcome, actor_id, subject, ip, request_id, details"
        " FROM audit_log"
        " WHERE (%(event)s::text IS NULL OR event = %(event)s)"
        " AND (%(actor)s::bigint IS NULL OR actor_id = %(actor)s)"
        " AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)"
        " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR at < %(until)s)"
        " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {
            "event": event,
            "actor": actor_id,
            "outcome": outcome,
            "since": since,
            "until": until,
            "before": before_id,
            "limit": limit,
        },
    )
    return [AuditEntry(**row) for row in await cur.fetchall()]
