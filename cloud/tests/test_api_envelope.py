"""Every answer wears the envelope; headers, limits, health and metrics behave."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator

import pytest
from cloud.tests.api_support import Api, Wallet, error_code, running_api, test_settings
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from gridclear.cloud.api.ratelimit import RateLimiter
from gridclear.cloud.identity.accounts import UserLoader
from gridclear.devtools.net import free_port


async def test_unknown_path_and_wrong_method(api: Api) -> None:
    missing = await api.client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert error_code(missing) == "NOT_FOUND"
    wrong = await api.client.delete("/api/auth/init")
    assert wrong.status_code == 405
    assert error_code(wrong) == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong.headers["allow"]


async def test_malformed_json_and_wrong_types_are_validation_errors(api: Api) -> None:
    broken = await api.client.post(
        "/api/auth/init", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert error_code(broken) == "VALIDATION_ERROR"
    typed = await api.client.post("/api/auth/init", json={"walletAddress": 12})
    assert error_code(typed) == "VALIDATION_ERROR"
    details = typed.json()["error"]["details"]
    assert details[0]["location"] == ["body", "walletAddress"]


async def test_unhandled_exception_is_a_generic_500_with_details_only_in_the_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    api.app.add_api_route("/api/explode", explode)
    with caplog.at_level(logging.ERROR):
        response = await api.client.get("/api/explode", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 500
    assert error_code(response) == "INTERNAL_ERROR"
    assert "hunter2" not in response.text
    assert response.headers["x-request-id"] == "trace-42"
    assert any("hunter2" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_security_headers_and_request_ids(api: Api) -> None:
    response = await api.client.get("/api/health/live")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert len(response.headers["x-request-id"]) == 32
    hostile = await api.client.get("/api/health/live", headers={"X-Request-ID": "a b<>" * 30})
    assert len(hostile.headers["x-request-id"]) == 32  # replaced, not echoed
    auth = await api.client.post("/api/auth/init", json={"walletAddress": Wallet().address})
    assert auth.headers["cache-control"] == "no-store"


async def test_oversized_bodies_are_refused(api: Api) -> None:
    limit = api.settings.max_body_bytes
    declared = await api.client.post(
        "/api/auth/login",
        content=b"x" * (limit + 1),
        headers={"content-type": "application/json"},
    )
    assert declared.status_code == 413
    assert error_code(declared) == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    streamed = await api.client.post(
        "/api/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert error_code(streamed) == "PAYLOAD_TOO_LARGE"


async def test_cors_allows_only_listed_origins(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = test_settings(
        migrated_db, redis_url, redis_prefix, cors_origins=["https://app.example"]
    )
    async with running_api(settings) as api:
        headers = {"Access-Control-Request-Method": "POST"}
        allowed = await api.client.options(
            "/api/auth/init", headers={**headers, "Origin": "https://app.example"}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = await api.client.options(
            "/api/auth/init", headers={**headers, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in denied.headers


async def test_large_answers_are_gzipped(api: Api) -> None:
    response = await api.client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["openapi"].startswith("3.")
    raw = await api.client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert len(gzip.compress(raw.content)) < len(raw.content)


async def test_health_live_ready_in_the_seed_shape(api: Api) -> None:
    health = await api.client.get("/api/health")
    data = health.json()["data"]
    assert data["status"] == "ok"
    assert data["database"] == "connected"
    assert data["redis"] == "connected"
    assert data["uptime"] >= 0
    assert (await api.client.get("/api/health/live")).json() == {
        "success": True,
        "data": {"status": "alive"},
    }
    ready = await api.client.get("/api/health/ready")
    assert ready.json()["data"]["checks"] == {"database": True, "redis": True}


async def test_readiness_fails_when_a_dependency_fails(api: Api) -> None:
    async def broker_down() -> bool:
        return False

    api.app.state.services.readiness["broker"] = broker_down
    ready = await api.client.get("/api/health/ready")
    assert ready.status_code == 503
    assert error_code(ready) == "SERVICE_UNAVAILABLE"
    assert ready.json()["error"]["details"]["checks"] == {
        "database": True,
        "redis": True,
        "broker": False,
    }


async def test_metrics_count_requests_by_route_and_auth_failures_by_reason(api: Api) -> None:
    await api.client.get("/api/auth/profile")
    await api.client.get("/api/auth/profile", headers={"Authorization": "Bearer junk"})
    await api.client.get("/api/users/123456/not-a-route")
    text = (await api.client.get("/metrics")).text
    assert 'gridclear_auth_failures_total{reason="AUTHENTICATION_REQUIRED"} 1.0' in text
    assert 'gridclear_auth_failures_total{reason="INVALID_TOKEN"} 1.0' in text
    assert (
        'gridclear_http_requests_total{method="GET",route="/api/auth/profile",status="401"} 2.0'
        in text
    )
    assert 'route="unmatched"' in text
    assert "123456" not in text
    assert "gridclear_http_request_duration_seconds_bucket" in text


async def test_openapi_documents_every_route_with_enveloped_errors(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Failure", (method, path, status)
    verify = schema["paths"]["/api/auth/verify"]["post"]["responses"]
    assert {"400", "401", "422", "429"} <= set(verify)


async def test_a_dependency_that_does_not_answer_is_a_retryable_503(api: Api) -> None:
    session = await api.sign_in(Wallet())
    headers = {"Authorization": f"Bearer {session['accessToken']}"}
    services = api.app.state.services
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there

    redis = Redis.from_url(f"redis://{dead}/0", socket_connect_timeout=0.5)
    working_limiter = services.limiter
    services.limiter = RateLimiter(redis=redis, prefix="dead:", limits={"identity": "9/minute"})
    try:
        down = await api.client.get("/api/auth/profile", headers=headers)
    finally:
        services.limiter = working_limiter
        await redis.aclose()
    assert (down.status_code, error_code(down)) == (503, "SERVICE_UNAVAILABLE")
    assert down.json()["error"]["details"] == {"dependency": "redis"}
    assert down.headers["retry-after"] == "2"

    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        f"postgresql://nobody@{dead}/none", min_size=0, max_size=1, timeout=0.5, open=False
    )
    await pool.open(wait=False)
    working_users = services.users
    services.users = UserLoader(pool)
    try:
        down = await api.client.get("/api/auth/profile", headers=headers)
    finally:
        services.users = working_users
        await pool.close()
    assert (down.status_code, error_code(down)) == (503, "SERVICE_UNAVAILABLE")
    assert down.json()["error"]["details"] == {"dependency": "database"}

    back = await api.client.get("/api/auth/profile", headers=headers)
    assert back.status_code == 200
