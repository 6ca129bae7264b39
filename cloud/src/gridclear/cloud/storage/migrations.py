"""Versioned SQL migrations: ``sql/NNNN_name.sql``, applied in order, each once.

Adding a table is a matter of dropping a new file into ``sql/`` with the next
number. Running :func:`migrate` again is a no-op; running it from several
processes at once is safe: each takes a PostgreSQL advisory lock on one key
before it looks at what is applied, so the second waits for the first and then
finds nothing left to do.

Each migration runs in its own transaction together with the row that records
it, so a failing file leaves neither half its changes nor a record behind. An
applied file must never change: its SHA-256 is recorded and a mismatch stops
the run (write a new migration instead). The one exception is a revision listed in
:data:`REVISED_CHECKSUMS`, whose earlier text is accepted as applied: it is kept for a
revision that only changes what happens where the earlier text failed.

**Storage path.** ``0011_readings`` makes readings and raw messages hypertables when
the server offers TimescaleDB, plain tables otherwise; later migrations follow the
path it took. The PostgreSQL setting ``gridclear.storage`` (``plain``, ``timescaledb``
or ``auto``, set for the server, the database, or by ``migrate(storage=...)`` for
the session) chooses on purpose.

**Failures.** A failing file raises :class:`MigrationError` with PostgreSQL's message
and hint on one line. If the failure ended the session (a FATAL error, such as
TimescaleDB's "must be preloaded"), the advisory lock went with it: the error is
raised as it is, never replaced by a second one from unlocking a closed connection.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "MIGRATION_LOCK_KEY",
    "REVISED_CHECKSUMS",
    "STORAGE_PATHS",
    "Migration",
    "MigrationError",
    "StoragePath",
    "applied_migrations",
    "discover_migrations",
    "migrate",
    "pending_migrations",
]

MIGRATION_LOCK_KEY = 0x67726964_6D696772  # "gridmigr": no other gridclear lock uses it
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

REVISED_CHECKSUMS: dict[int, frozenset[str]] = {
    # 0011_readings first went straight to CREATE EXTENSION timescaledb wherever the
    # extension was installed; on a server that had not preloaded it, that ended the
    # session. The revision refuses that case with a hint and reads gridclear.storage;
    # where the first text succeeded, both do the same.
    11: frozenset({"18c29a8d5b2c8e50c21424229e11d09bbdef0e760aa417c2452158c4118af718"}),
}
"""Version -> checksums of earlier texts of that migration that count as applied."""

StoragePath = Literal["auto", "plain", "timescaledb"]
STORAGE_PATHS: tuple[StoragePath, ...] = ("auto", "plain", "timescaledb")
"""The values of ``gridclear.storage``: auto takes TimescaleDB where the server offers it."""


class MigrationError(GridclearCloudError, RuntimeError):
    """The migrations cannot be applied as they are (names, edits, or a failing file)."""

    code = "migration_refused"


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version number, its name and its text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations() -> list[Migration]:
    """Every ``sql/NNNN_name.sql`` shipped with the package, by version.

    Raises :class:`MigrationError` for a stray file name or a duplicate number.
    """
    folder = resources.files("gridclear.cloud.storage") / "sql"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share number {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def applied_migrations(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    """Version -> checksum of what the database has applied (empty for a new database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(str(v)): str(c) for v, c in rows}


def pending_migrations(url: str) -> list[Migration]:
    """The shipped migrations the database at ``url`` has not applied, in order.

    Raises :class:`MigrationError` when the database cannot be reached, with the
    reason on one line.
    """
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            applied = applied_migrations(conn)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read the schema version: {_one_line(exc)}") from exc
    return [m for m in discover_migrations() if m.version not in applied]


def _one_line(exc: psycopg.Error) -> str:
    """PostgreSQL's message and its hint, on one line."""
    diag = exc.diag
    text = str(exc).strip()
    message = diag.message_primary or (text.splitlines()[0] if text else type(exc).__name__)
    if diag.message_hint:
        message = f"{message} (hint: {diag.message_hint})"
    return " ".join(message.split())


def _lost(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """True when the session is gone (closed, or ended by the server)."""
    return conn.closed or conn.broken


def migrate(
    url: str,
    *,
    migrations: list[Migration] | None = None,
    storage: StoragePath | None = None,
) -> list[Migration]:
    """Apply what is missing, in order; return what this call applied.

    ``storage`` sets ``gridclear.storage`` for this session (None leaves the server's
    or the database's setting, by default ``auto``).

    Raises :class:`MigrationError` when an applied migration was edited, when
    the database knows a version this code does not ship (it is newer than the
    code), or when a file fails (with PostgreSQL's message and hint, on one line).
    """
    if storage is not None and storage not in STORAGE_PATHS:
        raise ValueError(f"storage is one of {STORAGE_PATHS}, not {storage!r}")
    wanted = discover_migrations() if migrations is None else migrations
    done: list[Migration] = []
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database: {_one_line(exc)}") from exc
    with conn:
        if storage is not None:
            conn.execute("SELECT set_config('gridclear.storage', %s, false)", (storage,))
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            applied = applied_migrations(conn)
            known = {m.version for m in wanted}
            unknown = sorted(set(applied) - known)
            if unknown:
                raise MigrationError(
                    f"the database has migrations this version does not know: {unknown}; "
                    "run a newer gridclear-cloud"
                )
            for migration in wanted:
                if migration.version in applied:
                    accepted = {migration.checksum} | REVISED_CHECKSUMS.get(
                        migration.version, frozenset()
                    )
                    if applied[migration.version] not in accepted:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: "
                        f"{_one_line(exc)}"
                    ) from exc
                done.append(migration)
        finally:
            # A session the server ended took its lock along; unlocking it would only
            # raise a second error in place of the one that matters.
            if not _lost(conn):
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done
