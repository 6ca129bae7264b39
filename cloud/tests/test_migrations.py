"""Versioned migrations: in order, once, safe twice and from two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from cloud.tests.api_support import fresh_database

from gridclear.cloud.storage.migrations import (
    Migration,
    MigrationError,
    discover_migrations,
    migrate,
)


def _applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    return [(int(v), str(n)) for v, n in rows]


def test_shipped_migrations_start_with_identity_and_are_ordered() -> None:
    versions = [m.version for m in discover_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


def test_migrate_applies_everything_once_and_then_nothing(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        first = migrate(url)
        assert [m.version for m in first] == [m.version for m in discover_migrations()]
        assert migrate(url) == []
        assert _applied(url) == [(m.version, m.name) for m in discover_migrations()]
        with psycopg.connect(url) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            }
        assert {"users", "wallets", "refresh_tokens", "api_keys", "audit_log"} <= tables


def test_two_processes_migrating_at_once_both_succeed(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        env = {**os.environ, "GRIDCLEAR_DATABASE_URL": url}
        command = [str(Path(sys.executable).parent / "gridclear-cloud"), "migrate"]
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        printed = b"".join(out for out, _ in outputs).decode()
        assert printed.count("applied 0001_identity") == 1
        assert "up to date" in printed
        assert _applied(url) == [(m.version, m.name) for m in discover_migrations()]


def test_an_edited_migration_is_refused(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        one = Migration(1, "first", "CREATE TABLE t1 (id int);")
        migrate(url, migrations=[one])
        edited = Migration(1, "first", "CREATE TABLE t1 (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(url, migrations=[edited, Migration(2, "second", "CREATE TABLE t2 ();")])
        assert _applied(url) == [(1, "first")]


def test_a_failing_migration_leaves_nothing_half_done(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        good = Migration(1, "good", "CREATE TABLE good (id int);")
        bad = Migration(2, "bad", "CREATE TABLE half (id int); SELECT * FROM missing_table;")
        with pytest.raises(MigrationError, match="0002_bad failed"):
            migrate(url, migrations=[good, bad])
        assert _applied(url) == [(1, "good")]
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT to_regclass('half') IS NULL").fetchone()
        assert row == (True,)


def test_a_database_newer_than_the_code_is_refused(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        migrate(url, migrations=[Migration(1, "a", "SELECT 1;"), Migration(2, "b", "SELECT 1;")])
        with pytest.raises(MigrationError, match="does not know"):
            migrate(url, migrations=[Migration(1, "a", "SELECT 1;")])


def test_a_migration_that_ends_the_session_reports_its_own_error(postgres_admin_url: str) -> None:
    # A FATAL error closes the connection (TimescaleDB's "must be preloaded" does); the
    # lock went with the session, and the error the user sees is the migration's, not
    # one from unlocking a closed connection.
    fatal = Migration(1, "ends_session", "SELECT pg_terminate_backend(pg_backend_pid())")
    with fresh_database(postgres_admin_url) as url:
        with pytest.raises(MigrationError) as raised:
            migrate(url, migrations=[fatal])
        message = str(raised.value)
        assert message.startswith("migration 0001_ends_session failed: ")
        assert "terminating connection" in message
        assert "\n" not in message
        assert migrate(url, migrations=[Migration(1, "fine", "SELECT 1")]) != []


def test_serve_refuses_an_unmigrated_database_in_one_line(
    postgres_admin_url: str, redis_url: str
) -> None:
    with fresh_database(postgres_admin_url) as url:
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": url,
            "GRIDCLEAR_REDIS_URL": redis_url,
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }
        command = [str(Path(sys.executable).parent / "gridclear-cloud"), "serve", "--port", "9"]
        run = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr
    # One line says why (besides the settings' development-mode notice, a JSON log line).
    (line,) = [x for x in run.stderr.splitlines() if not x.startswith("{")]
    assert line.startswith("gridclear-cloud serve: the database lacks migrations 0001_")
    assert "gridclear-cloud migrate" in line
