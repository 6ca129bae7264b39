"""API keys for integrations: format, hashing and parsing (pure, no I/O).

A key reads ``gck_<prefix>_<secret>``: the 12-hex-character prefix finds the
row and is safe to show in lists; the 256-bit secret is never stored. Only the
SHA-256 of the whole key is kept. A fast hash is right here, unlike for
passwords: the key is random with 256 bits of entropy, so there is nothing to
guess, and every API call checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["KEY_MARKER", "NewKey", "hash_key", "key_matches", "key_prefix", "new_key"]

KEY_MARKER = "gck_"
_KEY = re.compile(r"^gck_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: show ``key`` once, store ``prefix`` and ``key_hash``."""

    key: str
    prefix: str
    key_hash: bytes


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_MARKER}{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, key_hash=hash_key(key))


def key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def key_matches(key: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(hash_key(key), stored_hash)
