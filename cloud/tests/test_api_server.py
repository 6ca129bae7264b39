"""The real thing: `gridclear-cloud migrate`, `admin create` and `serve` as processes,
talked to over TCP by an HTTP client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloud.tests.api_support import error_code, fresh_database

from gridclear.devtools.net import free_port

CLI = str(Path(sys.executable).parent / "gridclear-cloud")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def server_env(postgres_admin_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    with fresh_database(postgres_admin_url) as url:
        yield {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": url,
            "GRIDCLEAR_REDIS_URL": redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"test:server:{os.getpid()}:",
            "GRIDCLEAR_ARGON2_TIME_COST": "1",
            "GRIDCLEAR_ARGON2_MEMORY_KIB": "1024",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }


def test_serve_refuses_an_unmigrated_database_and_a_bad_production_config(
    server_env: dict[str, str],
) -> None:
    bad = _run(["serve", "--port", str(free_port())], {**server_env, "GRIDCLEAR_ENV": "production"})
    assert bad.returncode == 2
    assert "refusing to run in production" in bad.stderr


def test_migrate_admin_create_serve_and_sign_in_over_tcp(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    migrated = _run(["migrate"], server_env)
    assert migrated.returncode == 0, migrated.stderr
    password_file = tmp_path / "admin-password"
    password_file.write_text("a long admin passphrase\n")
    created = _run(
        ["admin", "create", "--email", "Ops@Example.org", "--password-file", str(password_file)],
        server_env,
    )
    assert created.returncode == 0, created.stderr
    assert "ops@example.org" in created.stdout
    duplicate = _run(
        ["admin", "create", "--email", "ops@example.org", "--password-file", str(password_file)],
        server_env,
    )
    assert duplicate.returncode == 1
    assert "already has an account" in duplicate.stderr

    port = free_port()
    server = subprocess.Popen(
        [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a hang guard: start-up is slow on a busy machine
        while True:
            try:
                if httpx.get(f"{base}/api/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            login = client.post(
                "/api/auth/login",
                json={"email": "ops@example.org", "password": "a long admin passphrase"},
            )
            assert login.status_code == 200, login.text
            token = login.json()["data"]["accessToken"]
            assert login.json()["data"]["user"]["role"] == "admin"
            audit = client.get("/api/admin/audit", headers={"Authorization": f"Bearer {token}"})
            events = [e["event"] for e in audit.json()["data"]]
            assert events[:2] == ["auth.password.sign_in", "user.admin.create"]
            health = client.get("/api/health").json()["data"]
            assert (health["database"], health["redis"]) == ("connected", "connected")
            assert "server" not in {k.lower() for k in client.get("/api/health").headers}
            missing = client.get("/api/nope")
            assert error_code(missing) == "NOT_FOUND"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
            raise
    # uvicorn shuts down gracefully, then re-raises the signal to exit with its status.
    assert server.returncode in (0, -signal.SIGTERM)
    assert b"Traceback" not in stderr
