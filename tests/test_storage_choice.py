"""Where TimescaleDB is installed but not preloaded, migrate says so in one line.

TimescaleDB refuses to load into a session unless the server preloaded it, and it
refuses with a FATAL error that ends the session. ``0011_readings`` checks first and
stops with a line that says what to do: preload it, or take the plain path on purpose
(``migrate --storage plain``).

These tests need TimescaleDB installed for the machine's PostgreSQL (as the tests of
the TimescaleDB path do): the session's plain server runs the same binaries without
preloading it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from cloud.tests.api_support import fresh_database
from psycopg import sql

CLI = str(Path(sys.executable).parent / "gridclear-cloud")


def _migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDCLEAR_DATABASE_URL": url}
    return subprocess.run(
        [CLI, "migrate", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def unpreloaded_database(postgres_admin_url: str, timescale_admin_url: str) -> str:
    """A database on the plain server that leaves the choice to migrate (auto)."""
    with psycopg.connect(postgres_admin_url) as conn:
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    assert available == (1,), "the plain server's PostgreSQL has no TimescaleDB installed"
    return postgres_admin_url


def test_an_unpreloaded_timescaledb_is_refused_in_one_line_with_the_way_out(
    unpreloaded_database: str,
) -> None:
    with fresh_database(unpreloaded_database) as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(unpreloaded_database, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET gridclear.storage = 'auto'").format(
                    sql.Identifier(str(name))
                )
            )
        refused = _migrate(url)
        assert refused.returncode == 1, refused
        assert "Traceback" not in refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("gridclear-cloud migrate: migration 0011_readings failed: ")
        assert "TimescaleDB is installed on this server but not preloaded" in line
        assert "shared_preload_libraries" in line
        assert "gridclear-cloud migrate --storage plain" in line

        taken = _migrate(url, "--storage", "plain")
        assert taken.returncode == 0, taken
        with psycopg.connect(url) as conn:
            extension = conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            kind = conn.execute(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass('interval_energy')"
            ).fetchone()
        assert extension == (0,)
        assert kind == ("r",)  # the plain path, later migrations included
        # Once taken, the path stays: a later run needs no option.
        again = _migrate(url)
        assert again.returncode == 0, again
        assert "up to date" in again.stdout


def test_asking_for_timescaledb_where_it_is_not_preloaded_is_refused_too(
    unpreloaded_database: str,
) -> None:
    with fresh_database(unpreloaded_database) as url:
        refused = _migrate(url, "--storage", "timescaledb")
    assert refused.returncode == 1
    assert "not preloaded" in refused.stderr
