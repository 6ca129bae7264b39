"""Sign-in challenges in Redis: issued once, consumed once.

A challenge is the exact message the server issued for one nonce, with the
wallet address it is for, its expiry and its purpose (signing in, or linking a
wallet to an account). Keys live a grace period beyond the message's expiry,
so that an expired challenge is told apart from an unknown or used one; the
expiry itself is checked against the service's clock, not Redis's.

Consumption is a single ``DEL``: of two concurrent verifications of the same
nonce exactly one sees it deleted, so a signature can be used once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from redis.asyncio import Redis

__all__ = ["Challenge", "NonceStore"]

_GRACE_S = 3600


@dataclass(frozen=True)
class Challenge:
    """What was issued for one nonce."""

    nonce: str
    address: str
    message: str
    expires_at: float
    """Unix time, seconds."""
    purpose: Literal["sign-in", "link"]
    user_id: int | None = None
    """For ``link``: the account the wallet is to be linked to."""


class NonceStore:
    """Challenges under ``{prefix}nonce:{nonce}``."""

    def __init__(self, *, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    def _key(self, nonce: str) -> str:
        return f"{self._prefix}nonce:{nonce}"

    async def issue(self, challenge: Challenge) -> None:
        """Store a fresh challenge; a nonce collision (never in practice) raises."""
        stored = await self._redis.set(
            self._key(challenge.nonce),
            json.dumps(asdict(challenge)),
            ex=self._ttl_s + _GRACE_S,
            nx=True,
        )
        if not stored:
            raise RuntimeError("nonce collision")

    async def get(self, nonce: str) -> Challenge | None:
        """The challenge issued for ``nonce``, unless it was consumed or long expired."""
        raw = await self._redis.get(self._key(nonce))
        if raw is None:
            return None
        data = json.loads(raw)
        return Challenge(**data)

    async def consume(self, nonce: str) -> bool:
        """Use the nonce up; True for exactly one caller."""
        deleted: int = await self._redis.delete(self._key(nonce))
        return deleted == 1
