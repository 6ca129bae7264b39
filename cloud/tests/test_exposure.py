"""What the API port shows to anyone: in production, no metrics and no API documentation
unless the operator turns them on (metrics only with a bearer token); in development both
stay, for tests and tools that read the OpenAPI document. And the compose file trusts
X-Forwarded-For from the configured proxy only."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from cloud.tests.api_support import running_api, test_settings

from gridclear.cloud.settings import OWASP_ARGON2_MIN_MEMORY_KIB, Settings
from gridclear.devtools import REPO_ROOT

METRICS_TOKEN = "m" * 40


def _production(db: str, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    return test_settings(
        db,
        redis_url,
        prefix,
        env="production",
        argon2_time_cost=2,
        argon2_memory_kib=OWASP_ARGON2_MIN_MEMORY_KIB,
        smtp_host="localhost",
        smtp_tls="none",
        mail_from="gridclear <no-reply@market.example.org>",
        **overrides,
    )


async def test_production_hides_metrics_and_the_api_documents(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    async with running_api(_production(migrated_db, redis_url, redis_prefix)) as api:
        for path in ("/metrics", "/openapi.json", "/docs", "/redoc"):
            response = await api.client.get(path)
            assert response.status_code == 404, (path, response.text[:200])
            assert "gridclear_http_requests" not in response.text
        # The API itself still answers, and still names the methods of a path it serves.
        assert (await api.client.get("/api/health/live")).status_code == 200
        wrong = await api.client.delete("/api/health/live")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET"


async def test_metrics_need_the_bearer_token_when_one_is_configured(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = _production(migrated_db, redis_url, redis_prefix, metrics_token=METRICS_TOKEN)
    async with running_api(settings) as api:
        missing = await api.client.get("/metrics")
        assert missing.status_code == 401
        wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401
        scraped = await api.client.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert scraped.status_code == 200
        assert "gridclear_http_requests" in scraped.text


async def test_operators_may_publish_the_api_documents_in_production(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = _production(migrated_db, redis_url, redis_prefix, api_docs=True)
    async with running_api(settings) as api:
        schema = await api.client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/api/devices/enroll" in schema.json()["paths"]
        assert (await api.client.get("/docs")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 404


async def test_development_keeps_metrics_and_documents_for_tools(
    migrated_db: str, redis_url: str, redis_prefix: str
) -> None:
    async with running_api(test_settings(migrated_db, redis_url, redis_prefix)) as api:
        assert (await api.client.get("/openapi.json")).status_code == 200
        assert (await api.client.get("/docs")).status_code == 200
        metrics = await api.client.get("/metrics")
        assert metrics.status_code == 200
        assert "gridclear_http_requests" in metrics.text


def test_production_refuses_a_short_metrics_token() -> None:
    with pytest.raises(ValueError, match="GRIDCLEAR_METRICS_TOKEN"):
        Settings(
            env="production",
            jwt_private_key_file=None,
            metrics_token="short",
            siws_domain="grid.example.org",
        )


def test_an_empty_metrics_token_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDCLEAR_METRICS_TOKEN", "")
    assert Settings().metrics_token is None


def test_compose_trusts_forwarded_addresses_from_the_proxy_only() -> None:
    compose: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    trusted = compose["services"]["api"]["environment"]["GRIDCLEAR_FORWARDED_ALLOW_IPS"]
    assert "172.16.0.0/12" not in trusted
    assert "*" not in trusted
    example = (REPO_ROOT / "deploy/env.example").read_text()
    assert "172.16.0.0/12" not in example
