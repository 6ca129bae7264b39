"""Password hashing with argon2id (argon2-cffi), off the event loop.

argon2id is memory-hard on purpose: one hash takes tens of milliseconds and
tens of MiB, so it runs in a worker thread, and a login for an unknown email
still verifies against a dummy hash so that response times do not reveal
which emails have accounts.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["MAX_PASSWORD_CHARS", "MIN_PASSWORD_CHARS", "Passwords"]

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256


class Passwords:
    """Hash and check passwords with fixed argon2id parameters."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._dummy = self._hasher.hash("gridclear-dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``stored_hash=None`` costs the same and says no."""
        target = stored_hash if stored_hash is not None else self._dummy

        def check() -> bool:
            try:
                return self._hasher.verify(target, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        matched = await asyncio.to_thread(check)
        return matched and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(stored_hash)
