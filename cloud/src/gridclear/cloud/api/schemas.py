"""Request and response bodies of the identity API (camelCase on the wire)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from gridclear.cloud.api.envelope import ApiModel
from gridclear.cloud.audit import AuditEntry
from gridclear.cloud.identity.accounts import User
from gridclear.cloud.identity.emails import MAX_EMAIL_CHARS, normalize_email
from gridclear.cloud.identity.keystore import ApiKey
from gridclear.cloud.identity.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from gridclear.cloud.identity.roles import Role, Scope

__all__ = [
    "EARLIEST",
    "LATEST",
    "AccountDeletedOut",
    "ApiKeyCreateIn",
    "ApiKeyCreatedOut",
    "ApiKeyOut",
    "AuditEntryOut",
    "ChallengeOut",
    "CredentialsIn",
    "EmailIn",
    "HealthOut",
    "InitIn",
    "IsoDatetime",
    "LinkAcceptedOut",
    "LinkTokenIn",
    "LoggedOutOut",
    "LoginIn",
    "PasswordChangeIn",
    "PasswordResetIn",
    "ProfileUpdateIn",
    "ReadyOut",
    "RefreshIn",
    "RegisterIn",
    "RoleChangeIn",
    "SessionOut",
    "UserOut",
    "UtcDatetime",
    "ValidateOut",
    "VerifyIn",
]

Email = Annotated[
    str, Field(min_length=3, max_length=MAX_EMAIL_CHARS), AfterValidator(normalize_email)
]
NewPassword = Annotated[str, Field(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)]
AnyPassword = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]
WalletAddress = Annotated[
    str,
    Field(
        min_length=32,
        max_length=44,
        pattern=r"^[1-9A-HJ-NP-Za-km-z]+$",
        description="Solana address: a base58 Ed25519 public key",
    ),
]
Signature = Annotated[
    str,
    Field(
        min_length=64,
        max_length=100,
        pattern=r"^[1-9A-HJ-NP-Za-km-z]+$",
        description="base58 Ed25519 signature of the message's UTF-8 bytes",
    ),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=100)]

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_only(value: object) -> object:
    # pydantic would also take a number of seconds; the schema promises RFC 3339 text.
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("expected an RFC 3339 date-time with a time zone")
    return value


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest date-time any input may name."""
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Every input date-time lies before this.

Python's datetime (and so every library the service reads rows with) ends at
9999-12-31 in the row's own time zone. A year of headroom keeps any input, moved
to any offset or by any span the service adds (a year at most), inside it, so a
value accepted here can be stored and read back everywhere.
"""


def _within_calendar(value: datetime) -> datetime:
    # Compared before any arithmetic: 0001-01-01T00:00+14:00 has no UTC equivalent.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware < LATEST:
        raise ValueError("expected a date-time from 1970-01-01T00:00:00Z to before 9999-01-01")
    return aware.astimezone(UTC)


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_within_calendar)]
"""An RFC 3339 date-time with its offset (``2026-05-04T10:15:00Z``), in [EARLIEST, LATEST), as UTC.

Every date-time a client sends is one of these (or a :data:`UtcDatetime`): a value
outside the range is a 422 naming the field, never a failure further in.
"""

UtcDatetime = Annotated[datetime, AfterValidator(_within_calendar)]
"""As :data:`IsoDatetime`, but a value without an offset is read as UTC (the meter routes')."""


class UserOut(ApiModel):
    id: int
    wallet_address: str | None
    wallets: list[str]
    email: str | None
    display_name: str | None
    role: Role
    has_password: bool
    email_verified: bool = Field(description="Whether the email was proven by a mailed link")
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            wallet_address=user.wallet_address,
            wallets=list(user.wallets),
            email=user.email,
            display_name=user.display_name,
            role=user.role,
            has_password=user.has_password,
            email_verified=user.email_verified,
            disabled=user.disabled,
            created_at=user.created_at,
        )


class InitIn(ApiModel):
    wallet_address: WalletAddress


class ChallengeOut(ApiModel):
    nonce: str
    message: str = Field(description="Sign exactly this text (UTF-8) with the wallet")
    expires_at: datetime


class VerifyIn(ApiModel):
    wallet_address: WalletAddress
    signature: Signature
    message: str = Field(min_length=1, max_length=2048)


class SessionOut(ApiModel):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a name, not a secret)
    user: UserOut


class RegisterIn(ApiModel):
    email: Email
    password: NewPassword
    display_name: DisplayName | None = None


class LoginIn(ApiModel):
    email: Email
    password: AnyPassword


class RefreshIn(ApiModel):
    refresh_token: str = Field(min_length=1, max_length=200)


class LoggedOutOut(ApiModel):
    logged_out: Literal[True] = True


class PasswordChangeIn(ApiModel):
    current_password: AnyPassword
    new_password: NewPassword


class EmailIn(ApiModel):
    email: Email


LinkToken = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The token of a mailed link (the `token` parameter of its address)",
    ),
]


class LinkTokenIn(ApiModel):
    token: LinkToken


class PasswordResetIn(ApiModel):
    token: LinkToken
    new_password: NewPassword


class LinkAcceptedOut(ApiModel):
    accepted: Literal[True] = True
    message: str = Field(
        description="The same whether or not a message was sent (nothing is revealed)"
    )


class AccountDeletedOut(ApiModel):
    deleted: Literal[True] = True
    user_id: int = Field(description="The pseudonymous id settled records keep naming")
    cancelled_orders: list[int] = Field(description="Open orders cancelled with the account")


class ValidateOut(ApiModel):
    valid: Literal[True] = True
    user_id: int
    role: Role
    kind: Literal["session", "api_key"]
    scopes: list[Scope]
    expires_at: datetime | None


class ProfileUpdateIn(ApiModel):
    display_name: DisplayName | None


class CredentialsIn(ApiModel):
    email: Email
    password: NewPassword


class ApiKeyCreateIn(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)]
    expires_at: IsoDatetime | None = None


class ApiKeyOut(ApiModel):
    id: int
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=sorted(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, store it now")


class RoleChangeIn(ApiModel):
    role: Role


class AuditEntryOut(ApiModel):
    id: int
    at: datetime
    event: str
    outcome: Literal["success", "failure"]
    actor_id: int | None
    subject: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(**entry.__dict__)


class HealthOut(ApiModel):
    status: Literal["ok", "degraded"]
    timestamp: datetime
    uptime: float = Field(description="Seconds since this process started serving")
    version: str
    database: Literal["connected", "disconnected"]
    redis: Literal["connected", "disconnected"]
    blockchain: Literal["connected", "disconnected", "not_configured"]
    """The ledger (Solana RPC): ``not_configured`` until settlement is set up."""
    environment: str
    """``development`` or ``production`` (the predecessor's ``environment``)."""
    message: str


class ReadyOut(ApiModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, bool]
