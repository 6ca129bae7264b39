"""Throwaway servers start, keep their data across a restart, and never outlive us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from gridclear.devtools.localservices import (
    PostgresServer,
    RedisServer,
    ServiceNotInstalledError,
    ServiceStartError,
    _find_binary,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_postgres_keeps_data_across_a_restart(server_dir: Path) -> None:
    server = PostgresServer(run_dir=server_dir)
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (wh bigint)")
            conn.execute("INSERT INTO kept VALUES (500)")
        server.stop()
        assert not server.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url, connect_timeout=2)
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT wh FROM kept").fetchall() == [(500,)]
    finally:
        server.stop()


def test_servers_die_with_a_killed_parent(server_dir: Path) -> None:
    """kill -9 of whoever started a server must not leave the server running."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from gridclear.devtools.localservices import RedisServer
        server = RedisServer(run_dir=Path({str(server_dir)!r}))
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid), "the server outlived the process that started it"


def test_a_failing_server_reports_its_log(server_dir: Path) -> None:
    server = RedisServer(run_dir=server_dir)
    server._command = lambda: [  # type: ignore[method-assign]
        str(server._binary),
        "--port",
        str(server.port),
        "--no-such-option",
        "1",
    ]
    with pytest.raises(ServiceStartError) as raised:
        server.start()
    assert "redis did not start: exited with code" in str(raised.value)
    assert "no-such-option" in str(raised.value)  # the log's tail names the problem


def test_a_missing_binary_says_what_to_install() -> None:
    with pytest.raises(ServiceNotInstalledError, match="apt-get install some-package"):
        _find_binary("gridclear-no-such-server", [], "some-package")
