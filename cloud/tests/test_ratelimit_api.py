"""Rate limits in Redis: per client address, per account, per identity; 429 + Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cloud.tests.api_support import Api, Wallet, bearer, error_code, running_api, test_settings


@pytest.fixture
async def strict(migrated_db: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Api]:
    settings = test_settings(
        migrated_db,
        redis_url,
        redis_prefix,
        rate_limits={"auth": "3/minute", "account": "100/minute", "identity": "4/minute"},
    )
    async with running_api(settings) as api:
        yield api


async def test_auth_routes_limit_per_client_address(
    strict: Api, redis_url: str, redis_prefix: str
) -> None:
    for _ in range(3):
        ok = await strict.client.post("/api/auth/init", json={"walletAddress": Wallet().address})
        assert ok.status_code == 200
    refused = await strict.client.post("/api/auth/init", json={"walletAddress": Wallet().address})
    assert refused.status_code == 429
    assert error_code(refused) == "RATE_LIMIT_EXCEEDED"
    # A sliding window: the wait ends when this window's count has decayed enough,
    # which can lie up to one more window ahead.
    assert 1 <= int(refused.headers["retry-after"]) <= 2 * 60
    assert refused.json()["error"]["details"]["group"] == "auth"

    # Another client address has its own budget, shared through Redis by every instance.
    async with running_api(strict.settings, client_ip="10.1.2.3") as other:
        response = await other.client.post(
            "/api/auth/init", json={"walletAddress": Wallet().address}
        )
        assert response.status_code == 200
    metrics = await strict.client.get("/metrics")
    assert 'gridclear_rate_limited_total{group="auth"} 1.0' in metrics.text


async def test_authenticated_requests_limit_per_identity(strict: Api) -> None:
    async with running_api(strict.settings, client_ip="10.9.9.9") as api:
        session = await api.sign_in(Wallet())
    headers = bearer(session["accessToken"])
    statuses = [
        (await strict.client.get("/api/auth/profile", headers=headers)).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]


async def test_sign_in_attempts_limit_per_wallet(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(
        migrated_db, redis_url, redis_prefix, rate_limits={"account": "2/minute"}
    )
    wallet = Wallet()
    async with running_api(settings) as api:
        for _ in range(2):
            assert (
                await api.client.post("/api/auth/init", json={"walletAddress": wallet.address})
            ).status_code == 200
        third = await api.client.post("/api/auth/init", json={"walletAddress": wallet.address})
        assert error_code(third) == "RATE_LIMIT_EXCEEDED"
        assert third.json()["error"]["details"]["group"] == "account"
        other = await api.client.post("/api/auth/init", json={"walletAddress": Wallet().address})
        assert other.status_code == 200
