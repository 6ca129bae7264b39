"""A real ``gridclear-cloud serve`` process on a free loopback port, for tests that need
the HTTP server itself (its limits and timeouts) rather than the app in-process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from cloud.tests.api_support import fresh_database

from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.net import free_port

CLI = str(Path(sys.executable).parent / "gridclear-cloud")


@contextlib.contextmanager
def serving(
    postgres_admin_url: str, redis_url: str, **environment: str
) -> Iterator[tuple[str, int, str]]:
    """``(host, port, database_url)`` of a served API on a migrated database of its own.

    ``environment`` adds ``GRIDCLEAR_*`` variables. On exit the server is stopped with
    SIGTERM and must exit cleanly, without a traceback.
    """
    with fresh_database(postgres_admin_url) as url:
        migrate(url)
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": url,
            "GRIDCLEAR_REDIS_URL": redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"test:serve:{os.getpid()}:{free_port()}:",
            "GRIDCLEAR_ARGON2_TIME_COST": "1",
            "GRIDCLEAR_ARGON2_MEMORY_KIB": "1024",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
            **environment,
        }
        port = free_port()
        server = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120  # a hang guard: start-up is slow on a busy machine
            while True:
                try:
                    live = httpx.get(f"http://127.0.0.1:{port}/api/health/live", timeout=1)
                    if live.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
            yield "127.0.0.1", port, url
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                _, stderr = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
                raise
        assert server.returncode in (0, -signal.SIGTERM), stderr.decode(errors="replace")
        assert b"Traceback" not in stderr, stderr.decode(errors="replace")
