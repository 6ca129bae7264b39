"""Versioned SQL migrations: ``sql/NNNN_name.sql``, applied in order, each once.

Adding a table is a matter of dropping a new file into ``sql/`` with the next
number. Running :func:`migrate` again is a no-op; running it from several
processes at once is safe: each takes a PostgreSQL advisory lock on one key
before it looks at what is applied, so the second waits for the first and then
finds nothing left to do.

Each migration runs in its own transaction together with the row that records
it, so a failing file leaves neither half its changes nor a record behind. An
applied file must never change: its SHA-256 is recorded and a mismatch stops
the run (write a new migration instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "applied_migrations",
    "discover_migrations",
    "migrate",
]

MIGRATION_LOCK_KEY = 0x67726964_6D696772  # "gridmigr": no other gridclear lock uses it
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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


def migrate(url: str, *, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is missing, in order; return what this call applied.

    Raises :class:`MigrationError` when an applied migration was edited, when
    the database knows a version this code does not ship (it is newer than the
    code), or when a file fails (with PostgreSQL's message).
    """
    wanted = discover_migrations() if migrations is None else migrations
    done: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
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
                    if applied[migration.version] != migration.checksum:
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
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                done.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done
