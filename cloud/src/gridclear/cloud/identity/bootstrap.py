"""``gridclear-cloud admin create``: the first admin account, from the command line.

The password comes from a file (``--password-file``), from
``GRIDCLEAR_ADMIN_PASSWORD`` (automation), or from a prompt typed twice; it is
never an argument, so it does not land in shell history or ``ps``.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import psycopg
from argon2 import PasswordHasher, Type
from psycopg.types.json import Jsonb

from gridclear.cloud import env
from gridclear.cloud.audit import AuditEvent
from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.identity.emails import normalize_email
from gridclear.cloud.identity.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from gridclear.cloud.identity.roles import Role
from gridclear.cloud.settings import Settings, SettingsError

__all__ = ["BootstrapError", "create_admin", "read_password"]


class BootstrapError(GridclearCloudError, RuntimeError):
    """The admin cannot be created; the message says why."""

    code = "bootstrap_refused"


def read_password(password_file: Path | None) -> str:
    """The new admin's password from the file, the environment, or a prompt."""
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise BootstrapError(f"cannot read {password_file}: {exc}") from exc
    elif os.environ.get(env.ADMIN_PASSWORD):
        password = os.environ[env.ADMIN_PASSWORD]
    elif sys.stdin.isatty():
        password = getpass.getpass("Password for the new admin: ")
        if getpass.getpass("Repeat it: ") != password:
            raise BootstrapError("the two passwords differ")
    else:
        raise BootstrapError(
            f"no password: use --password-file, set {env.ADMIN_PASSWORD}, or run in a terminal"
        )
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise BootstrapError(
            f"the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )
    return password


def create_admin(
    *,
    settings: Settings,
    email: str,
    password: str,
    display_name: str | None = None,
    promote_existing: bool = False,
) -> int:
    """Create (or, with ``promote_existing``, promote) the admin; returns the user id."""
    if not settings.database_url:
        raise SettingsError(f"set {env.DATABASE_URL}")
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise BootstrapError(f"{email!r} is not an email address") from exc
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=1,
        type=Type.ID,
    )
    try:
        with psycopg.connect(settings.database_url) as conn, conn.transaction():
            row = conn.execute(
                "SELECT id, role FROM users WHERE email = %s FOR UPDATE", (email,)
            ).fetchone()
            if row is not None:
                if not promote_existing:
                    raise BootstrapError(
                        f"{email} already has an account (use --promote-existing to make it admin)"
                    )
                user_id = int(row[0])
                conn.execute(
                    "UPDATE users SET role = %s, updated_at = now() WHERE id = %s",
                    (Role.ADMIN, user_id),
                )
                details = {"by": "cli", "from": row[1]}
            else:
                created = conn.execute(
                    "INSERT INTO users (email, password_hash, display_name, role)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (email, hasher.hash(password), display_name, Role.ADMIN),
                ).fetchone()
                assert created is not None
                user_id = int(created[0])
                details = {"by": "cli"}
            conn.execute(
                "INSERT INTO audit_log (event, outcome, actor_id, subject, details)"
                " VALUES (%s, 'success', NULL, %s, %s)",
                (AuditEvent.ADMIN_CREATE.value, str(user_id), Jsonb(details)),
            )
    except psycopg.errors.UndefinedTable as exc:
        raise BootstrapError("the database has no schema yet: run gridclear-cloud migrate") from exc
    return user_id
