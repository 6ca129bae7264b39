"""Settings: production refuses weak configuration; development makes a key per start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gridclear.cloud.settings import Settings, SettingsError, generate_signing_key_pem

_PRODUCTION = {
    "GRIDCLEAR_ENV": "production",
    "GRIDCLEAR_SIWS_DOMAIN": "market.example.org",
    "GRIDCLEAR_DATABASE_URL": "postgresql://db/gridclear",
    "GRIDCLEAR_REDIS_URL": "redis://cache:6379/0",
    "GRIDCLEAR_SMTP_HOST": "smtp.example.org",
    "GRIDCLEAR_SMTP_USERNAME": "gridclear",
    "GRIDCLEAR_SMTP_PASSWORD": "a-mail-password",
    "GRIDCLEAR_MAIL_FROM": "gridclear <no-reply@market.example.org>",
}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("GRIDCLEAR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _set(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_production_with_a_key_file_starts(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "jwt.pem"
    key.write_text(generate_signing_key_pem())
    _set(environ, {**_PRODUCTION, "GRIDCLEAR_JWT_PRIVATE_KEY_FILE": str(key)})
    settings = Settings.load()
    assert settings.env == "production"
    settings.signing_key()


def test_production_refuses_to_start_without_a_key(environ: pytest.MonkeyPatch) -> None:
    _set(environ, _PRODUCTION)
    with pytest.raises(SettingsError, match="no access-token signing key"):
        Settings.load()


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "changeme-changeme-changeme-changeme",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_production_refuses_a_short_or_default_secret(
    environ: pytest.MonkeyPatch, key: str
) -> None:
    _set(environ, {**_PRODUCTION, "GRIDCLEAR_JWT_PRIVATE_KEY": key})
    with pytest.raises(SettingsError, match="not an unencrypted PEM private key"):
        Settings.load()


def test_production_refuses_a_non_ed25519_key(environ: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    _set(environ, {**_PRODUCTION, "GRIDCLEAR_JWT_PRIVATE_KEY": pem})
    with pytest.raises(SettingsError, match="must be Ed25519"):
        Settings.load()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"GRIDCLEAR_SIWS_DOMAIN": "localhost:8000"}, "public domain"),
        ({"GRIDCLEAR_CORS_ORIGINS": '["*"]'}, "not '\\*'"),
        ({"GRIDCLEAR_ARGON2_MEMORY_KIB": "4096"}, "OWASP"),
    ],
)
def test_production_refuses_unsafe_choices(
    environ: pytest.MonkeyPatch, extra: dict[str, str], problem: str
) -> None:
    _set(
        environ,
        {**_PRODUCTION, "GRIDCLEAR_JWT_PRIVATE_KEY": generate_signing_key_pem(), **extra},
    )
    with pytest.raises(SettingsError, match=problem):
        Settings.load()


def test_development_generates_a_fresh_key_per_start_with_a_warning(
    environ: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = Settings.load()
        second = Settings.load()
    assert first.jwt_private_key is not None
    assert second.jwt_private_key is not None
    assert first.jwt_private_key.get_secret_value() != second.jwt_private_key.get_secret_value()
    assert "generated for this process start" in caplog.text
    assert first.jwt_private_key.get_secret_value() not in caplog.text


def test_bad_values_are_named(environ: pytest.MonkeyPatch) -> None:
    _set(environ, {"GRIDCLEAR_RATE_LIMITS": '{"auth": "lots"}'})
    with pytest.raises(SettingsError, match="rate limit for 'auth'"):
        Settings.load()
    _set(environ, {"GRIDCLEAR_RATE_LIMITS": "{}", "GRIDCLEAR_ACCESS_TOKEN_TTL_S": "5"})
    with pytest.raises(SettingsError, match="GRIDCLEAR_ACCESS_TOKEN_TTL_S"):
        Settings.load()


def test_rate_limit_overrides_merge_over_defaults(environ: pytest.MonkeyPatch) -> None:
    _set(environ, {"GRIDCLEAR_RATE_LIMITS": '{"auth": "5/second;100/hour"}'})
    limits = Settings.load().rate_limits
    assert limits["auth"] == "5/second;100/hour"
    assert "identity" in limits
