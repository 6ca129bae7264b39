"""Typed settings of the cloud's processes, built once at start-up and passed in.

One class per process: :class:`Settings` for the API (``serve``),
:class:`IngestSettings` for ingest workers (``ingest``) and
:class:`SchedulerSettings` for the market scheduler (``scheduler``). Every value
comes from one environment variable named in :mod:`gridclear.cloud.env` (or from
keyword arguments: a command's options, and tests). Nothing reads the environment
at import time. Each class's ``load()`` raises :class:`SettingsError` naming every
problem, so a command stops with one clear message.

Secrets and modes:

- ``GRIDCLEAR_ENV=production`` refuses to start without a real Ed25519 signing
  key for access tokens, with a ``localhost`` sign-in domain, with a ``*`` CORS
  origin, with password hashing weaker than OWASP's argon2id minimum, or with a
  short metrics token. It serves no metrics (unless a metrics token is set) and
  no API documents (unless ``GRIDCLEAR_API_DOCS`` turns them on).
- In production an ingest worker refuses to start without its database and broker
  URLs, or with a broker URL that names no user and password; the scheduler
  refuses without its database and Redis URLs, or with an accelerated or shifted
  market clock (acceleration is for demos and tests: accelerated slots are real
  rows).
- In development, when no key is configured, :meth:`Settings.load` generates a
  fresh one for this process start and logs a warning: tokens then die with the
  process, and nothing secret is ever written to the repository. ``serve`` hands
  that key to its worker processes through the environment, so several workers
  accept each other's tokens.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridclear.cloud import env as names
from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.logs import LOG_LEVELS

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "MIN_METRICS_TOKEN_CHARS",
    "OWASP_ARGON2_MIN_MEMORY_KIB",
    "DatabaseSettings",
    "IngestSettings",
    "LedgerSettings",
    "ProcessSettings",
    "SchedulerSettings",
    "Settings",
    "SettingsError",
    "generate_signing_key_pem",
]

log = logging.getLogger(__name__)

DEFAULT_RATE_LIMITS: dict[str, str] = {
    # Unauthenticated sign-in and registration, per client address.
    "auth": "30/minute",
    # Sign-in attempts and password changes naming one wallet, email or account, from anywhere.
    "account": "10/minute",
    # Registrations per client address (each reveals whether its email has an account).
    "register": "10/minute;60/hour",
    # Gateway enrolment (the token is the credential), per client address.
    "enroll": "10/minute",
    # Account mail (verification and reset links) per email address, asked for from anywhere.
    "mail": "5/hour",
    # Every other /api route, per client address.
    "api": "600/minute",
    # Every authenticated request, per user or API key.
    "identity": "1200/minute",
    # Public market data read without credentials, per client address (besides "api").
    "public": "300/minute",
}
"""Route group -> limit, in the ``limits`` notation (``"5/second;100/minute"`` stacks)."""

OWASP_ARGON2_MIN_MEMORY_KIB = 19 * 1024
"""OWASP's minimum argon2id memory (19 MiB with two passes); production refuses less."""


MIN_METRICS_TOKEN_CHARS = 32
"""Production refuses a shorter metrics bearer token."""


class SettingsError(GridclearCloudError, ValueError):
    """The configuration is unusable; the message names the variable and the fix."""

    code = "bad_settings"


def generate_signing_key_pem() -> str:
    """A fresh Ed25519 private key, PEM (PKCS#8), for signing access tokens."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class ProcessSettings(BaseSettings):
    """What every cloud process reads: its mode and how it logs."""

    model_config = SettingsConfigDict(
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
    )

    env: Literal["development", "production"] = Field(
        default="development", validation_alias=names.ENV
    )
    """GRIDCLEAR_ENV."""
    log_format: Literal["json", "text"] = Field(default="json", validation_alias=names.LOG_FORMAT)
    """GRIDCLEAR_LOG_FORMAT: ``json`` (one object per line) or ``text``."""
    log_level: str = Field(default="INFO", validation_alias=names.LOG_LEVEL)
    """GRIDCLEAR_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL."""

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @classmethod
    def load(cls) -> Self:
        """Settings from the environment; raises :class:`SettingsError` naming every problem."""
        return cls._build({})

    @classmethod
    def _build(cls, overrides: dict[str, Any]) -> Self:
        """Settings from the environment, with ``overrides`` (by variable name) on top.

        ``None`` overrides are ignored (an option not given); raises
        :class:`SettingsError` naming every problem.
        """
        from pydantic import ValidationError

        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from exc


class Settings(ProcessSettings):
    """What the API needs to run. Field docs name the environment variable."""

    database_url: str | None = Field(default=None, validation_alias=names.DATABASE_URL)
    """GRIDCLEAR_DATABASE_URL: PostgreSQL conninfo or URL."""
    redis_url: str | None = Field(default=None, validation_alias=names.REDIS_URL)
    """GRIDCLEAR_REDIS_URL."""
    redis_key_prefix: str = Field(default="gridclear:", validation_alias=names.REDIS_KEY_PREFIX)
    """GRIDCLEAR_REDIS_KEY_PREFIX: every Redis key the API writes starts with it."""

    jwt_private_key: SecretStr | None = Field(default=None, validation_alias=names.JWT_PRIVATE_KEY)
    """GRIDCLEAR_JWT_PRIVATE_KEY: PEM Ed25519 private key."""
    jwt_private_key_file: Path | None = Field(
        default=None, validation_alias=names.JWT_PRIVATE_KEY_FILE
    )
    """GRIDCLEAR_JWT_PRIVATE_KEY_FILE: a file holding that PEM key."""
    jwt_issuer: str = Field(default="gridclear", min_length=1, validation_alias=names.JWT_ISSUER)
    jwt_audience: str = Field(
        default="gridclear-api", min_length=1, validation_alias=names.JWT_AUDIENCE
    )
    access_token_ttl_s: int = Field(
        default=900, ge=30, le=86_400, validation_alias=names.ACCESS_TOKEN_TTL_S
    )
    refresh_token_ttl_s: int = Field(
        default=30 * 86_400, ge=300, le=365 * 86_400, validation_alias=names.REFRESH_TOKEN_TTL_S
    )

    siws_domain: str = Field(
        default="localhost:8000", min_length=1, validation_alias=names.SIWS_DOMAIN
    )
    siws_uri: str = Field(
        default="http://localhost:8000", min_length=1, validation_alias=names.SIWS_URI
    )
    siws_chain_id: str = Field(
        default="mainnet", min_length=1, validation_alias=names.SIWS_CHAIN_ID
    )
    siws_statement: str = Field(
        default="Sign in to gridclear, the local energy market.",
        min_length=1,
        max_length=200,
        validation_alias=names.SIWS_STATEMENT,
    )
    nonce_ttl_s: int = Field(default=300, ge=30, le=3600, validation_alias=names.NONCE_TTL_S)

    cors_origins: list[str] = Field(default_factory=list, validation_alias=names.CORS_ORIGINS)
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, validation_alias=names.MAX_BODY_BYTES
    )
    rate_limits: dict[str, str] = Field(default_factory=dict, validation_alias=names.RATE_LIMITS)
    """GRIDCLEAR_RATE_LIMITS: overrides merged over :data:`DEFAULT_RATE_LIMITS`."""
    rate_limits_enabled: bool = Field(default=True, validation_alias=names.RATE_LIMITS_ENABLED)
    db_pool_min: int = Field(default=1, ge=1, le=100, validation_alias=names.DB_POOL_MIN)
    db_pool_max: int = Field(default=10, ge=1, le=200, validation_alias=names.DB_POOL_MAX)
    argon2_time_cost: int = Field(default=3, ge=1, le=20, validation_alias=names.ARGON2_TIME_COST)
    argon2_memory_kib: int = Field(
        default=64 * 1024, ge=8, le=4 * 1024 * 1024, validation_alias=names.ARGON2_MEMORY_KIB
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", validation_alias=names.FORWARDED_ALLOW_IPS
    )
    """GRIDCLEAR_FORWARDED_ALLOW_IPS: only the reverse proxy's own address(es)."""
    metrics_token: SecretStr | None = Field(default=None, validation_alias=names.METRICS_TOKEN)
    """GRIDCLEAR_METRICS_TOKEN: ``/metrics`` then needs ``Authorization: Bearer <token>``.

    Without it, ``/metrics`` is open in development and absent in production.
    """
    api_docs: bool | None = Field(default=None, validation_alias=names.API_DOCS)
    """GRIDCLEAR_API_DOCS: serve the OpenAPI document and its pages (None: development only)."""

    request_timeout_s: float = Field(
        default=10.0, gt=0, le=600, validation_alias=names.REQUEST_TIMEOUT_S
    )
    """GRIDCLEAR_REQUEST_TIMEOUT_S: a request's deadline; past it, 503 and the work cancelled."""
    db_statement_timeout_ms: int | None = Field(
        default=None, ge=1, le=3_600_000, validation_alias=names.DB_STATEMENT_TIMEOUT_MS
    )
    """GRIDCLEAR_DB_STATEMENT_TIMEOUT_MS: the API connections' ``statement_timeout``.

    None: the request deadline, so no statement outlives the request that sent it.
    """

    smtp_host: str | None = Field(default=None, validation_alias=names.SMTP_HOST)
    """GRIDCLEAR_SMTP_HOST: where account mail (verification, password reset) is sent."""
    smtp_port: int | None = Field(default=None, ge=1, le=65535, validation_alias=names.SMTP_PORT)
    """GRIDCLEAR_SMTP_PORT (None: the TLS mode's usual port)."""
    smtp_tls: Literal["starttls", "implicit", "none"] = Field(
        default="starttls", validation_alias=names.SMTP_TLS
    )
    """GRIDCLEAR_SMTP_TLS: ``starttls``, ``implicit`` or ``none``."""
    smtp_username: str | None = Field(default=None, validation_alias=names.SMTP_USERNAME)
    smtp_password: SecretStr | None = Field(default=None, validation_alias=names.SMTP_PASSWORD)
    mail_from: str | None = Field(default=None, validation_alias=names.MAIL_FROM)
    """GRIDCLEAR_MAIL_FROM: the sender of account mail."""
    public_url: str | None = Field(default=None, validation_alias=names.PUBLIC_URL)
    """GRIDCLEAR_PUBLIC_URL: where account links point (None: the SIWS URI)."""
    account_link_ttl_s: int = Field(
        default=3600, ge=60, le=7 * 86_400, validation_alias=names.ACCOUNT_LINK_TTL_S
    )
    """GRIDCLEAR_ACCOUNT_LINK_TTL_S: how long a verification or reset link works."""

    @property
    def smtp_port_or_default(self) -> int:
        """The SMTP port: the one set, or the TLS mode's usual one."""
        if self.smtp_port is not None:
            return self.smtp_port
        return {"starttls": 587, "implicit": 465, "none": 25}[self.smtp_tls]

    @property
    def link_base_url(self) -> str:
        """The web address account links start with (no trailing slash)."""
        return (self.public_url or self.siws_uri).rstrip("/")

    # The HTTP server's own limits (uvicorn; see gridclear.cloud.api.server_limits).
    http_max_head_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, validation_alias=names.HTTP_MAX_HEAD_BYTES
    )
    """GRIDCLEAR_HTTP_MAX_HEAD_BYTES."""
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, le=300, validation_alias=names.HTTP_HEADER_TIMEOUT_S
    )
    """GRIDCLEAR_HTTP_HEADER_TIMEOUT_S."""
    http_body_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, validation_alias=names.HTTP_BODY_TIMEOUT_S
    )
    """GRIDCLEAR_HTTP_BODY_TIMEOUT_S."""
    http_keepalive_timeout_s: int = Field(
        default=5, ge=1, le=300, validation_alias=names.HTTP_KEEPALIVE_TIMEOUT_S
    )
    """GRIDCLEAR_HTTP_KEEPALIVE_TIMEOUT_S."""
    http_max_connections: int = Field(
        default=4096, ge=16, le=1_000_000, validation_alias=names.HTTP_MAX_CONNECTIONS
    )
    """GRIDCLEAR_HTTP_MAX_CONNECTIONS: per worker process."""

    solana_rpc_url: str | None = Field(default=None, validation_alias=names.SOLANA_RPC_URL)
    """GRIDCLEAR_SOLANA_RPC_URL: the ledger settlement uses (unset: no settlement routes)."""
    solana_commitment: Literal["processed", "confirmed", "finalized"] = Field(
        default="confirmed", validation_alias=names.SOLANA_COMMITMENT
    )
    """GRIDCLEAR_SOLANA_COMMITMENT."""

    @property
    def serves_api_docs(self) -> bool:
        """Whether the OpenAPI document and its pages are served (default: development only)."""
        return self.api_docs if self.api_docs is not None else self.env == "development"

    @field_validator("solana_rpc_url", mode="before")
    @classmethod
    def _no_empty_rpc_url(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "metrics_token",
        "smtp_host",
        "smtp_port",
        "smtp_username",
        "smtp_password",
        "mail_from",
        "public_url",
        "db_statement_timeout_ms",
        mode="before",
    )
    @classmethod
    def _no_empty_token(cls, value: object) -> object:
        # An empty variable (compose passes ${VAR:-}) means no token, not an empty one.
        return None if value == "" else value

    @field_validator("rate_limits")
    @classmethod
    def _merge_rate_limits(cls, value: dict[str, str]) -> dict[str, str]:
        from limits import parse_many

        merged = {**DEFAULT_RATE_LIMITS, **value}
        for group, spec in merged.items():
            try:
                parse_many(spec)
            except ValueError as exc:
                raise ValueError(f"rate limit for {group!r} is not valid: {spec!r}") from exc
        return merged

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(f"{names.DB_POOL_MIN} must not exceed {names.DB_POOL_MAX}")
        if self.jwt_private_key is not None and self.jwt_private_key_file is not None:
            raise ValueError(
                f"set {names.JWT_PRIVATE_KEY} or {names.JWT_PRIVATE_KEY_FILE}, not both"
            )
        if self.env == "production":
            self._check_production()
        return self

    def _check_production(self) -> None:
        problems = []
        if self.jwt_private_key is None and self.jwt_private_key_file is None:
            problems.append(
                f"no access-token signing key: set {names.JWT_PRIVATE_KEY_FILE} to a PEM Ed25519 "
                "private key (openssl genpkey -algorithm ed25519 -out jwt.pem)"
            )
        else:
            try:
                self.signing_key()
            except SettingsError as exc:
                problems.append(str(exc))
        if self.siws_domain.split(":")[0] in {"localhost", "127.0.0.1", "::1"}:
            problems.append(f"{names.SIWS_DOMAIN} must be the public domain users sign in to")
        if "*" in self.cors_origins:
            problems.append(f"{names.CORS_ORIGINS} must list origins, not '*'")
        if self.argon2_memory_kib < OWASP_ARGON2_MIN_MEMORY_KIB or self.argon2_time_cost < 2:
            problems.append(
                f"argon2id parameters below OWASP's minimum (19 MiB, 2 passes): "
                f"{names.ARGON2_MEMORY_KIB}={self.argon2_memory_kib}, "
                f"{names.ARGON2_TIME_COST}={self.argon2_time_cost}"
            )
        if (
            self.metrics_token is not None
            and len(self.metrics_token.get_secret_value()) < MIN_METRICS_TOKEN_CHARS
        ):
            problems.append(
                f"{names.METRICS_TOKEN} must be at least {MIN_METRICS_TOKEN_CHARS} characters "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        problems += self._mail_problems()
        if problems:
            raise ValueError("refusing to run in production: " + "; ".join(problems))

    def _mail_problems(self) -> list[str]:
        """Production sends account links by mail: a server, a sender, and a safe way there."""
        problems = []
        if not self.smtp_host:
            problems.append(
                f"set {names.SMTP_HOST} (and {names.SMTP_TLS}, {names.SMTP_USERNAME}, "
                f"{names.SMTP_PASSWORD}): verification and password-reset links go by mail"
            )
        if not self.mail_from:
            problems.append(f"set {names.MAIL_FROM}, the sender of account mail")
        local = self.smtp_host in {"localhost", "127.0.0.1", "::1"}
        if self.smtp_host and not local:
            if self.smtp_tls == "none":
                problems.append(
                    f"{names.SMTP_TLS}=none sends reset links in clear text: only to a local relay"
                )
            if not self.smtp_username or self.smtp_password is None:
                problems.append(
                    f"set {names.SMTP_USERNAME} and {names.SMTP_PASSWORD} for {self.smtp_host}"
                )
        return problems

    def signing_key(self) -> Ed25519PrivateKey:
        """The access-token signing key; raises :class:`SettingsError` if unusable."""
        if self.jwt_private_key_file is not None:
            try:
                pem = self.jwt_private_key_file.read_bytes()
            except OSError as exc:
                raise SettingsError(
                    f"{names.JWT_PRIVATE_KEY_FILE}: cannot read {self.jwt_private_key_file}: {exc}"
                ) from exc
        elif self.jwt_private_key is not None:
            pem = self.jwt_private_key.get_secret_value().encode()
        else:
            raise SettingsError(f"no access-token signing key: set {names.JWT_PRIVATE_KEY_FILE}")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SettingsError(
                "the access-token signing key is not an unencrypted PEM private key"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SettingsError("the access-token signing key must be Ed25519")
        return key

    @classmethod
    def load(cls) -> Self:
        """Settings from the environment; in development, a per-process key when none is set.

        Raises :class:`SettingsError` (with every problem named) when the
        configuration is unusable.
        """
        settings = cls._build({})
        if settings.env == "development" and (
            settings.jwt_private_key is None and settings.jwt_private_key_file is None
        ):
            log.warning(
                "development mode: no %s set, signing access tokens with a key generated "
                "for this process start; tokens stop working when it restarts",
                names.JWT_PRIVATE_KEY_FILE,
            )
            settings = settings.model_copy(
                update={"jwt_private_key": SecretStr(generate_signing_key_pem())}
            )
        settings.signing_key()
        return settings


class DatabaseSettings(ProcessSettings):
    """What a command that only needs the database reads (``devices``, ``migrate``)."""

    database_url: str | None = Field(default=None, validation_alias=names.DATABASE_URL)
    """GRIDCLEAR_DATABASE_URL (or ``--database-url`` where a command has it)."""

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    def database(self, *, option: str | None = None) -> str:
        """The database URL; raises :class:`SettingsError` naming the variable when unset."""
        if not self.database_url:
            alternative = f" or {option}" if option else ""
            raise SettingsError(f"set {names.DATABASE_URL}{alternative}")
        return self.database_url


class IngestSettings(DatabaseSettings):
    """What an ingest worker (``gridclear-cloud ingest``) reads from the environment.

    The command's ``--database-url`` and ``--mqtt-url`` override the variables; the
    worker's tuning (batch size, windows, bounds) comes from options only (see
    ``gridclear-cloud ingest --help``).
    """

    mqtt_url: str | None = Field(default=None, validation_alias=names.MQTT_URL)
    """GRIDCLEAR_MQTT_URL (or ``--mqtt-url``): ``mqtt://user:password@host:port``, or mqtts://."""

    @field_validator("mqtt_url", mode="before")
    @classmethod
    def _mqtt_unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("mqtt", "mqtts"):
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return value

    @model_validator(mode="after")
    def _ingest_production(self) -> Self:
        if self.env == "production":
            problems = []
            if not self.database_url:
                problems.append(f"set {names.DATABASE_URL}")
            if not self.mqtt_url:
                problems.append(f"set {names.MQTT_URL}")
            else:
                parts = urlsplit(self.mqtt_url)
                if not parts.username or not parts.password:
                    problems.append(
                        f"{names.MQTT_URL} must name the cloud's broker user and password "
                        "(mqtt://gridclear-cloud:<password>@host:1883)"
                    )
            if problems:
                raise ValueError("refusing to run in production: " + "; ".join(problems))
        return self

    @classmethod
    def load(cls, *, database_url: str | None = None, mqtt_url: str | None = None) -> Self:
        """Settings from the environment; the arguments (options given) take precedence.

        Raises :class:`SettingsError` when the configuration is unusable.
        """
        return cls._build({names.DATABASE_URL: database_url, names.MQTT_URL: mqtt_url})

    def urls(self) -> tuple[str, str]:
        """``(database_url, mqtt_url)``; raises :class:`SettingsError` naming what is unset."""
        database = self.database(option="--database-url")
        if not self.mqtt_url:
            raise SettingsError(f"set {names.MQTT_URL} or --mqtt-url")
        return database, self.mqtt_url


class LedgerSettings(DatabaseSettings):
    """Where settlement happens: the ledger's RPC endpoint and the service keys.

    Read by ``gridclear-cloud ledger`` and the scheduler. Settlement is off while
    ``GRIDCLEAR_SOLANA_RPC_URL`` is unset; the keys are needed only by the
    processes that sign (``ledger init`` and the scheduler), never by the API.
    """

    solana_rpc_url: str | None = Field(default=None, validation_alias=names.SOLANA_RPC_URL)
    """GRIDCLEAR_SOLANA_RPC_URL: the ledger's JSON-RPC endpoint (unset: no settlement)."""
    solana_commitment: Literal["processed", "confirmed", "finalized"] = Field(
        default="confirmed", validation_alias=names.SOLANA_COMMITMENT
    )
    """GRIDCLEAR_SOLANA_COMMITMENT: how final a ledger answer must be."""
    oracle_key_file: Path | None = Field(default=None, validation_alias=names.ORACLE_KEY_FILE)
    """GRIDCLEAR_ORACLE_KEY_FILE: the energy mint authority's key file (0600)."""
    settlement_key_file: Path | None = Field(
        default=None, validation_alias=names.SETTLEMENT_KEY_FILE
    )
    """GRIDCLEAR_SETTLEMENT_KEY_FILE: the settlement authority's key file (0600)."""
    settlement_fault: str | None = Field(default=None, validation_alias=names.SETTLEMENT_FAULT)
    """GRIDCLEAR_SETTLEMENT_FAULT: tests only, where settlement kills itself."""

    @field_validator(
        "solana_rpc_url",
        "oracle_key_file",
        "settlement_key_file",
        "settlement_fault",
        mode="before",
    )
    @classmethod
    def _ledger_unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("solana_rpc_url")
    @classmethod
    def _rpc_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _ledger_check(self) -> Self:
        if self.settlement_fault is not None and self.env == "production":
            raise ValueError(
                f"refusing to run in production: {names.SETTLEMENT_FAULT} is for tests only"
            )
        return self

    def key_files(self) -> tuple[Path, Path]:
        """``(oracle, settlement authority)`` key files; raises naming what is unset."""
        missing = [
            name
            for name, value in (
                (names.ORACLE_KEY_FILE, self.oracle_key_file),
                (names.SETTLEMENT_KEY_FILE, self.settlement_key_file),
            )
            if value is None
        ]
        if self.oracle_key_file is None or self.settlement_key_file is None:
            raise SettingsError("set " + " and ".join(missing))
        return self.oracle_key_file, self.settlement_key_file


class SchedulerSettings(LedgerSettings):
    """What the market scheduler (``gridclear-cloud scheduler``) reads from the environment.

    ``--speed``, ``--epoch``, ``--epoch-at`` and ``--interval`` override the market variables.
    """

    redis_url: str | None = Field(default=None, validation_alias=names.REDIS_URL)
    """GRIDCLEAR_REDIS_URL: where slot and order events are published (none: not published)."""
    redis_key_prefix: str = Field(default="gridclear:", validation_alias=names.REDIS_KEY_PREFIX)
    """GRIDCLEAR_REDIS_KEY_PREFIX: the API's prefix, so that its instances hear the events."""
    market_speed: float = Field(default=1.0, validation_alias=names.MARKET_SPEED)
    """GRIDCLEAR_MARKET_SPEED (or ``--speed``): market time acceleration (1: real time)."""
    market_epoch: datetime | None = Field(default=None, validation_alias=names.MARKET_EPOCH)
    """GRIDCLEAR_MARKET_EPOCH (or ``--epoch``): RFC 3339 market time to start from (None: now)."""
    market_epoch_at: datetime | None = Field(default=None, validation_alias=names.MARKET_EPOCH_AT)
    """GRIDCLEAR_MARKET_EPOCH_AT (or ``--epoch-at``): the wall-clock time at which market time
    was the epoch (None: the scheduler's start), so several processes share one clock."""
    scheduler_interval_s: float = Field(default=1.0, validation_alias=names.SCHEDULER_INTERVAL_S)
    """GRIDCLEAR_SCHEDULER_INTERVAL_S (or ``--interval``): wall seconds between ticks."""

    @field_validator("redis_url", "market_epoch", "market_epoch_at", mode="before")
    @classmethod
    def _scheduler_unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _scheduler_check(self) -> Self:
        # The option and the variable share these checks, so the messages name both.
        if not 0 < self.market_speed <= 100_000:
            raise ValueError(
                f"speed must be above 0 and at most 100000 (--speed, {names.MARKET_SPEED})"
            )
        if self.market_epoch is not None and self.market_epoch.tzinfo is None:
            raise ValueError(
                f"the epoch needs a UTC offset, e.g. 2026-05-04T06:00:00Z "
                f"(--epoch, {names.MARKET_EPOCH})"
            )
        if self.market_epoch_at is not None:
            if self.market_epoch is None:
                raise ValueError(
                    f"--epoch-at ({names.MARKET_EPOCH_AT}) needs --epoch ({names.MARKET_EPOCH}):"
                    " the market time at that instant"
                )
            if self.market_epoch_at.tzinfo is None:
                raise ValueError(
                    f"the epoch's wall-clock time needs a UTC offset, e.g. 2026-05-04T06:00:00Z "
                    f"(--epoch-at, {names.MARKET_EPOCH_AT})"
                )
        if not 0.01 <= self.scheduler_interval_s <= 3600:
            raise ValueError(
                "the interval must be 0.01 to 3600 seconds "
                f"(--interval, {names.SCHEDULER_INTERVAL_S})"
            )
        if self.env == "production":
            problems = []
            if not self.database_url:
                problems.append(f"set {names.DATABASE_URL}")
            if not self.redis_url:
                problems.append(f"set {names.REDIS_URL}: without it no one hears of the slots")
            if self.market_speed != 1 or self.market_epoch is not None:
                problems.append(
                    f"the market clock must be real time: no {names.MARKET_SPEED} or "
                    f"{names.MARKET_EPOCH} (--speed, --epoch are for demos and tests)"
                )
            if problems:
                raise ValueError("refusing to run in production: " + "; ".join(problems))
        return self

    @classmethod
    def load(
        cls,
        *,
        speed: float | None = None,
        epoch: datetime | str | None = None,
        epoch_at: datetime | str | None = None,
        interval_s: float | None = None,
    ) -> Self:
        """Settings from the environment; the arguments (options given) take precedence.

        Raises :class:`SettingsError` when the configuration is unusable.
        """
        return cls._build(
            {
                names.MARKET_SPEED: speed,
                names.MARKET_EPOCH: epoch,
                names.MARKET_EPOCH_AT: epoch_at,
                names.SCHEDULER_INTERVAL_S: interval_s,
            }
        )


def _describe(exc: Exception) -> str:
    """Every problem of a failed validation, each naming its variable."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
