"""Every environment variable gridclear's cloud side reads, named in one place.

Nothing reads these at import time: settings objects are built from them once,
at start-up, and passed in.
"""

from typing import Final

__all__ = [
    "ACCESS_TOKEN_TTL_S",
    "ACCOUNT_LINK_TTL_S",
    "ADMIN_PASSWORD",
    "API_DOCS",
    "ARGON2_MEMORY_KIB",
    "ARGON2_TIME_COST",
    "CORS_ORIGINS",
    "DATABASE_URL",
    "DB_POOL_MAX",
    "DB_POOL_MIN",
    "DB_STATEMENT_TIMEOUT_MS",
    "ENV",
    "FORWARDED_ALLOW_IPS",
    "HTTP_BODY_TIMEOUT_S",
    "HTTP_HEADER_TIMEOUT_S",
    "HTTP_KEEPALIVE_TIMEOUT_S",
    "HTTP_MAX_CONNECTIONS",
    "HTTP_MAX_HEAD_BYTES",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_PRIVATE_KEY",
    "JWT_PRIVATE_KEY_FILE",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MAIL_FROM",
    "MARKET_EPOCH",
    "MARKET_EPOCH_AT",
    "MARKET_SPEED",
    "MAX_BODY_BYTES",
    "METRICS_TOKEN",
    "MQTT_URL",
    "NONCE_TTL_S",
    "ORACLE_KEY_FILE",
    "PROMETHEUS_MULTIPROC_DIR",
    "PUBLIC_URL",
    "RATE_LIMITS",
    "RATE_LIMITS_ENABLED",
    "REDIS_KEY_PREFIX",
    "REDIS_URL",
    "REFRESH_TOKEN_TTL_S",
    "REQUEST_TIMEOUT_S",
    "SCHEDULER_INTERVAL_S",
    "SETTLEMENT_FAULT",
    "SETTLEMENT_KEY_FILE",
    "SIWS_CHAIN_ID",
    "SIWS_DOMAIN",
    "SIWS_STATEMENT",
    "SIWS_URI",
    "SMTP_HOST",
    "SMTP_PASSWORD",
    "SMTP_PORT",
    "SMTP_TLS",
    "SMTP_USERNAME",
    "SOLANA_COMMITMENT",
    "SOLANA_RPC_URL",
]

DATABASE_URL: Final = "GRIDCLEAR_DATABASE_URL"
"""PostgreSQL URL of an existing server; when unset, a throwaway server is started."""

REDIS_URL: Final = "GRIDCLEAR_REDIS_URL"
"""Redis URL of an existing server; when unset, a throwaway server is started."""

MQTT_URL: Final = "GRIDCLEAR_MQTT_URL"
"""MQTT broker URL (mqtt:// or mqtts://); when unset, a throwaway Mosquitto is started."""


# ---------------------------------------------------------------- API and identity
# Read once by gridclear.cloud.settings.Settings; docs/API.md documents each one.

ENV: Final = "GRIDCLEAR_ENV"
"""``development`` (default) or ``production``; production refuses weak or missing secrets."""

JWT_PRIVATE_KEY: Final = "GRIDCLEAR_JWT_PRIVATE_KEY"
"""PEM Ed25519 private key that signs access tokens (or use the _FILE variant)."""

JWT_PRIVATE_KEY_FILE: Final = "GRIDCLEAR_JWT_PRIVATE_KEY_FILE"
"""Path to a PEM Ed25519 private key file that signs access tokens."""

JWT_ISSUER: Final = "GRIDCLEAR_JWT_ISSUER"
JWT_AUDIENCE: Final = "GRIDCLEAR_JWT_AUDIENCE"
ACCESS_TOKEN_TTL_S: Final = "GRIDCLEAR_ACCESS_TOKEN_TTL_S"  # noqa: S105 (a name, not a secret)
REFRESH_TOKEN_TTL_S: Final = "GRIDCLEAR_REFRESH_TOKEN_TTL_S"  # noqa: S105 (a name, not a secret)

SIWS_DOMAIN: Final = "GRIDCLEAR_SIWS_DOMAIN"
"""The domain (host[:port]) that wallet sign-in messages name; wallets show it to users."""
SIWS_URI: Final = "GRIDCLEAR_SIWS_URI"
SIWS_CHAIN_ID: Final = "GRIDCLEAR_SIWS_CHAIN_ID"
SIWS_STATEMENT: Final = "GRIDCLEAR_SIWS_STATEMENT"
NONCE_TTL_S: Final = "GRIDCLEAR_NONCE_TTL_S"

CORS_ORIGINS: Final = "GRIDCLEAR_CORS_ORIGINS"
"""JSON list of browser origins allowed to call the API (empty: none)."""
MAX_BODY_BYTES: Final = "GRIDCLEAR_MAX_BODY_BYTES"
RATE_LIMITS: Final = "GRIDCLEAR_RATE_LIMITS"
"""JSON object of route group -> limit (``"30/minute"``, ``"5/second;100/hour"``)."""
RATE_LIMITS_ENABLED: Final = "GRIDCLEAR_RATE_LIMITS_ENABLED"
REDIS_KEY_PREFIX: Final = "GRIDCLEAR_REDIS_KEY_PREFIX"
DB_POOL_MIN: Final = "GRIDCLEAR_DB_POOL_MIN"
DB_POOL_MAX: Final = "GRIDCLEAR_DB_POOL_MAX"
ARGON2_TIME_COST: Final = "GRIDCLEAR_ARGON2_TIME_COST"
ARGON2_MEMORY_KIB: Final = "GRIDCLEAR_ARGON2_MEMORY_KIB"
LOG_FORMAT: Final = "GRIDCLEAR_LOG_FORMAT"
"""``json`` (one object per line, the default) or ``text``."""
LOG_LEVEL: Final = "GRIDCLEAR_LOG_LEVEL"
FORWARDED_ALLOW_IPS: Final = "GRIDCLEAR_FORWARDED_ALLOW_IPS"
"""Proxies whose X-Forwarded-For is trusted for the client address (comma list, or ``*``)."""
METRICS_TOKEN: Final = "GRIDCLEAR_METRICS_TOKEN"  # noqa: S105 (a name, not a secret)
"""Bearer token Prometheus must send for ``/metrics``; without it, no metrics in production."""
PROMETHEUS_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: a folder (a tmpfs is best) where the API's workers keep
their metrics for one ``/metrics``. ``serve`` empties it at start; unset, with several
workers, ``serve`` makes a temporary one."""
API_DOCS: Final = "GRIDCLEAR_API_DOCS"
"""Serve ``/openapi.json``, ``/docs`` and ``/redoc`` (default: in development only)."""
HTTP_MAX_HEAD_BYTES: Final = "GRIDCLEAR_HTTP_MAX_HEAD_BYTES"
"""Largest request head (request line and headers) the server reads; larger answers 431."""
HTTP_HEADER_TIMEOUT_S: Final = "GRIDCLEAR_HTTP_HEADER_TIMEOUT_S"
"""Seconds a client has to send a whole request head, from connecting or from its first byte."""
HTTP_BODY_TIMEOUT_S: Final = "GRIDCLEAR_HTTP_BODY_TIMEOUT_S"
"""Seconds a client has to send a whole request body once its head has arrived."""
HTTP_KEEPALIVE_TIMEOUT_S: Final = "GRIDCLEAR_HTTP_KEEPALIVE_TIMEOUT_S"
"""Seconds an idle keep-alive connection stays open between requests."""
HTTP_MAX_CONNECTIONS: Final = "GRIDCLEAR_HTTP_MAX_CONNECTIONS"
"""Connections (and tasks) per API worker process past which new requests answer 503."""

REQUEST_TIMEOUT_S: Final = "GRIDCLEAR_REQUEST_TIMEOUT_S"
"""Seconds an API request may take before it is cancelled and answered 503 (default 10)."""
DB_STATEMENT_TIMEOUT_MS: Final = "GRIDCLEAR_DB_STATEMENT_TIMEOUT_MS"
"""PostgreSQL ``statement_timeout`` of the API's connections, ms (default: the request's)."""

SMTP_HOST: Final = "GRIDCLEAR_SMTP_HOST"
"""The mail server that sends verification and password-reset links (required in production)."""
SMTP_PORT: Final = "GRIDCLEAR_SMTP_PORT"
"""Its port (default: 587 for starttls, 465 for implicit, 25 for none)."""
SMTP_TLS: Final = "GRIDCLEAR_SMTP_TLS"
"""``starttls`` (default), ``implicit`` (TLS from the first byte) or ``none``."""
SMTP_USERNAME: Final = "GRIDCLEAR_SMTP_USERNAME"
SMTP_PASSWORD: Final = "GRIDCLEAR_SMTP_PASSWORD"  # noqa: S105 (a name, not a secret)
MAIL_FROM: Final = "GRIDCLEAR_MAIL_FROM"
"""The sender of account mail (``gridclear <no-reply@market.example.org>``)."""
PUBLIC_URL: Final = "GRIDCLEAR_PUBLIC_URL"
"""The web address account links point at (default: GRIDCLEAR_SIWS_URI)."""
ACCOUNT_LINK_TTL_S: Final = "GRIDCLEAR_ACCOUNT_LINK_TTL_S"
"""Seconds a mailed verification or reset link works (default 3600)."""

ADMIN_PASSWORD: Final = "GRIDCLEAR_ADMIN_PASSWORD"  # noqa: S105 (a name, not a secret)
"""``admin create`` reads the new admin's password from here when set (automation)."""

# ---------------------------------------------------------------- market scheduler
# Read once by gridclear.cloud.settings.SchedulerSettings; docs/MARKET.md documents each
# one. Ingest workers read DATABASE_URL and MQTT_URL through IngestSettings (docs/INGEST.md);
# every process reads ENV, LOG_FORMAT and LOG_LEVEL.

MARKET_SPEED: Final = "GRIDCLEAR_MARKET_SPEED"
"""Market time acceleration for demos and tests (1 = real time, the default)."""
MARKET_EPOCH: Final = "GRIDCLEAR_MARKET_EPOCH"
"""RFC 3339 time the accelerated market clock starts from (default: now)."""
MARKET_EPOCH_AT: Final = "GRIDCLEAR_MARKET_EPOCH_AT"
"""RFC 3339 wall-clock time at which market time was MARKET_EPOCH (default: the start)."""
SCHEDULER_INTERVAL_S: Final = "GRIDCLEAR_SCHEDULER_INTERVAL_S"
"""Wall-clock seconds between scheduler ticks (default 1)."""

# ---------------------------------------------------------------- settlement
# Read once by gridclear.cloud.settings (LedgerSettings, and the API's and the
# scheduler's settings); docs/SETTLEMENT.md documents each one.

SOLANA_RPC_URL: Final = "GRIDCLEAR_SOLANA_RPC_URL"
"""Solana JSON-RPC: the ledger node, a validator, devnet or mainnet (unset: no settlement)."""
SOLANA_COMMITMENT: Final = "GRIDCLEAR_SOLANA_COMMITMENT"
"""``processed``, ``confirmed`` (the default) or ``finalized``."""
ORACLE_KEY_FILE: Final = "GRIDCLEAR_ORACLE_KEY_FILE"
"""Key file (0600, Solana CLI format) of the oracle: the energy mint's authority."""
SETTLEMENT_KEY_FILE: Final = "GRIDCLEAR_SETTLEMENT_KEY_FILE"
"""Key file (0600, Solana CLI format) of the settlement authority: fee payer and delegate."""
SETTLEMENT_FAULT: Final = "GRIDCLEAR_SETTLEMENT_FAULT"
"""Tests only: the step at which settlement kills its own process (refused in production)."""
