"""Shared helpers and fixtures for the API tests: a migrated database, settings,
an app run in-process with its lifespan, a movable clock, real Ed25519 wallets.

Imported by the ``test_api_*``/``test_auth_*`` modules (``from cloud.tests.api_support
import ...``); the fixtures use the harness's real PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import base58
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from nacl.signing import SigningKey
from psycopg import sql
from pydantic import SecretStr

from gridclear.cloud.api.app import create_app
from gridclear.cloud.settings import Settings, generate_signing_key_pem
from gridclear.cloud.storage.migrations import migrate

DOMAIN = "gridclear.test"


class Clock:
    """A UTC clock tests move forward by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Wallet:
    """A real Ed25519 key pair with its Solana (base58) address."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.address = base58.b58encode(bytes(self.key.verify_key)).decode()

    def sign(self, message: str) -> str:
        return base58.b58encode(self.key.sign(message.encode()).signature).decode()


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    clock: Clock
    settings: Settings
    database_url: str

    async def sign_in(self, wallet: Wallet) -> dict[str, Any]:
        init = await self.client.post("/api/auth/init", json={"walletAddress": wallet.address})
        assert init.status_code == 200, init.text
        message = init.json()["data"]["message"]
        verify = await self.client.post(
            "/api/auth/verify",
            json={
                "walletAddress": wallet.address,
                "signature": wallet.sign(message),
                "message": message,
            },
        )
        assert verify.status_code == 200, verify.text
        data: dict[str, Any] = verify.json()["data"]
        return data

    async def register(self, email: str, password: str = "correct horse battery") -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/register", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def count(self, query: str, *params: object) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return int(row[0])

    def make_admin(self, user_id: int) -> None:
        with psycopg.connect(self.database_url) as conn:
            conn.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user_id,))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["success"] is False, body
    assert set(body["error"]) == {"message", "code", "details"}, body
    code: str = body["error"]["code"]
    return code


def test_settings(
    database_url: str, redis_url: str, redis_prefix: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_key_prefix": redis_prefix,
        "jwt_private_key": SecretStr(generate_signing_key_pem()),
        "siws_domain": DOMAIN,
        "siws_uri": f"https://{DOMAIN}",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "db_pool_max": 4,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, *, client_ip: str = "127.0.0.1", clock: Clock | None = None
) -> AsyncIterator[Api]:
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    clock = clock or Clock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(
            app=app, raise_app_exceptions=False, client=(client_ip, 40000)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert settings.database_url is not None
            yield Api(client, app, clock, settings, settings.database_url)


@pytest.fixture(scope="module")
def migrated_db(database_url: str) -> str:
    """The module's database with every migration applied."""
    migrate(database_url)
    return database_url


@pytest.fixture
async def api(migrated_db: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Api]:
    async with running_api(test_settings(migrated_db, redis_url, redis_prefix)) as running:
        yield running


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database for one test, dropped afterwards."""
    name = f"t_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
