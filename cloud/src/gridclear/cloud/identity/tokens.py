"""Access tokens: short-lived JWTs signed with Ed25519 (pure, no I/O).

Verification pins everything: the algorithm (``EdDSA`` only, so ``none`` and
an HMAC signed with the public key are refused before any key is used), the
issuer, the audience, and the presence of ``exp``, ``iat``, ``sub``, ``jti``
and ``sid``. ``sid`` names the session (the refresh-token family) so that
logging out or a detected refresh-token reuse can revoke the access tokens
still in flight.

A verified token's claims are kept in a bounded LRU keyed by the exact token
text: an app sends the same token on every request for its lifetime, and the
Ed25519 check is the dearest step of authenticating it. A hit still checks
expiry against the clock; a token that failed is never cached.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gridclear.cloud.errors import GridclearCloudError

__all__ = ["ALGORITHM", "AccessClaims", "AccessTokens", "TokenError"]

ALGORITHM = "EdDSA"


class TokenError(GridclearCloudError):
    """The token is refused; ``code`` is ``expired`` or ``invalid``."""

    code = "invalid"

    def __init__(self, reason: Literal["expired", "invalid"], message: str) -> None:
        super().__init__(message)
        self.code = reason


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says."""

    user_id: int
    role: str
    session_id: uuid.UUID
    token_id: str
    expires_at: datetime


class AccessTokens:
    """Issue and verify access tokens with one key pair."""

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        issuer: str,
        audience: str,
        ttl: timedelta,
        clock: Callable[[], datetime],
        cache_size: int = 8192,
    ) -> None:
        self._private = private_key
        self._public: Ed25519PublicKey = private_key.public_key()
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl
        self._clock = clock
        self._decode = functools.lru_cache(maxsize=cache_size)(self._decode_uncached)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def issue(self, *, user_id: int, role: str, session_id: uuid.UUID) -> tuple[str, datetime]:
        """A signed token and its expiry."""
        now = self._clock()
        expires = now + self.ttl
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
            "sid": str(session_id),
            "role": role,
            "typ": "access",
        }
        token = jwt.encode(claims, self._private, algorithm=ALGORITHM, headers={"typ": "JWT"})
        return token, expires

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raises :class:`TokenError` otherwise."""
        claims = self._decode(token)
        if claims.expires_at <= self._clock():
            raise TokenError("expired", "the access token has expired")
        return claims

    def _decode_uncached(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti", "sid"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("expired", "the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid", "the access token is not valid") from exc
        try:
            if claims.get("typ") != "access":
                raise ValueError("not an access token")
            return AccessClaims(
                user_id=int(claims["sub"]),
                role=str(claims.get("role", "")),
                session_id=uuid.UUID(str(claims["sid"])),
                token_id=str(claims["jti"]),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=self._clock().tzinfo),
            )
        except (ValueError, TypeError) as exc:
            raise TokenError("invalid", "the access token is not valid") from exc
