"""The audit log: who did what to identities, money and the market, when, from where.

Rows are only ever inserted; admins search them through ``GET /api/admin/audit``
(by actor, action, subject and time, newest first, paged by a cursor).

How to record
-------------
Call :func:`record_audit` with the connection that makes the change, *inside the
change's transaction*: the entry then commits with the action and only with it
(a rolled-back order leaves no "order placed" entry; a committed one always has
its entry). Entries that record a refusal (outcome ``failure``), where nothing is
changed, may use a connection of their own.

Actions
-------
The names are stable: dashboards, alerts and searches filter on them. Each is
``<area>.<what>[.<verb>]``; the ``subject`` column names what was acted on.

==================================  ==========================================  ==================
action                              when                                        subject
==================================  ==========================================  ==================
``auth.wallet.sign_in``             a wallet sign-in (or its refusal)           wallet address
``auth.password.sign_in``           a password sign-in (or its refusal)         email
``auth.register``                   a password account registered               email
``auth.refresh.reuse``              a used refresh token came back              session id
``auth.logout``                     a session ended                             session id
``auth.password.change``            a password changed                          --
``auth.password.reset_request``     a reset link asked for (known or not)       --
``auth.password.reset``             a password reset with a link                user id
``user.email.verify_request``       a verification link sent                    user id
``user.email.verify``               an email verified with a link               user id
``user.wallet.link``                a wallet linked                             wallet address
``user.wallet.unlink``              a wallet unlinked (or refused)              wallet address
``user.credentials.add``            email and password added to an account      email
``user.role.change``                an admin changed a role                     user id
``user.disable`` / ``user.enable``  an admin disabled or enabled an account     user id
``user.delete``                     an account deleted (pseudonymised)          user id
``user.admin.create``               an admin created from the command line      user id
``apikey.create`` / ``.revoke``     an API key created or revoked               key id
``order.place``                     an order placed                             order id
``order.amend``                     an order amended                            order id
``order.cancel``                    an order cancelled (by its owner or         order id
                                    because its account was disabled/deleted)
``market.config.change``            the market configuration changed            --
``settlement.approve``              a slot's settlement approved                slot id
``settlement.submit``               a settlement sent to the ledger             slot id
``settlement.confirm``              a settlement confirmed on the ledger        slot id
``settlement.reconcile.difference`` ledger and database disagree                slot id
==================================  ==========================================  ==================

The ``settlement.*`` names are reserved for the settlement service, which records
them with :func:`record_audit` in its own transactions.
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
    PASSWORD_RESET_REQUEST = "auth.password.reset_request"  # noqa: S105 (a name)
    PASSWORD_RESET = "auth.password.reset"  # noqa: S105 (a name, not a secret)
    EMAIL_VERIFY_REQUEST = "user.email.verify_request"
    EMAIL_VERIFY = "user.email.verify"
    WALLET_UNLINK = "user.wallet.unlink"
    ACCOUNT_DELETE = "user.delete"
    ORDER_PLACE = "order.place"
    ORDER_AMEND = "order.amend"
    ORDER_CANCEL = "order.cancel"
    MARKET_CONFIG_CHANGE = "market.config.change"
    SETTLEMENT_APPROVE = "settlement.approve"
    SETTLEMENT_SUBMIT = "settlement.submit"
    SETTLEMENT_CONFIRM = "settlement.confirm"
    RECONCILIATION_DIFFERENCE = "settlement.reconcile.difference"


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
    subject: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first; page with ``before_id`` (the last id of the previous page).

    ``event`` matches an action exactly, or every action under a prefix when it
    ends with ``.*`` (``order.*``); ``since`` is inclusive, ``until`` exclusive.
    """
    prefix = event[:-1] if event is not None and event.endswith(".*") else None
    cur = await conn.execute(
        "SELECT id, at, event, outcome, actor_id, subject, ip, request_id, details"
        " FROM audit_log"
        " WHERE (%(event)s::text IS NULL OR event = %(event)s)"
        " AND (%(prefix)s::text IS NULL OR starts_with(event, %(prefix)s))"
        " AND (%(actor)s::bigint IS NULL OR actor_id = %(actor)s)"
        " AND (%(subject)s::text IS NULL OR subject = %(subject)s)"
        " AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)"
        " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR at < %(until)s)"
        " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {
            "event": None if prefix is not None else event,
            "prefix": prefix,
            "actor": actor_id,
            "subject": subject,
            "outcome": outcome,
            "since": since,
            "until": until,
            "before": before_id,
            "limit": limit,
        },
    )
    return [AuditEntry(**row) for row in await cur.fetchall()]
