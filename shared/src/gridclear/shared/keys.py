"""Device keys: Ed25519 (RFC 8037), kept in a JWK file that only its owner can read.

The private key is generated on the gateway and never leaves it. The file is a
JSON Web Key (``{"kty": "OKP", "crv": "Ed25519", "d": ..., "x": ..., "kid": ...}``)
so that any JOSE tool can read it; it is created with mode 0600 and refused when
group or others have any access to it. The key id (``kid``) is the RFC 7638 JWK
thumbprint of the public key: anyone holding the public key can recompute it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from gridclear.shared._b64 import b64url_decode, b64url_encode
from gridclear.shared.errors import KeyFileError

__all__ = [
    "DeviceKey",
    "PublicKey",
    "create_key_file",
    "jwk_thumbprint",
    "load_key_file",
]

_KEY_BYTES = 32


def jwk_thumbprint(x: str) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key given as ``x``."""
    # RFC 7638 §3: the required members only, in lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key with its ``kid``; what the cloud stores per device."""

    raw: bytes
    kid: str = field(init=False)
    _verify_key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {_KEY_BYTES} bytes, not {len(self.raw)}")
        object.__setattr__(self, "kid", jwk_thumbprint(b64url_encode(self.raw)))
        object.__setattr__(self, "_verify_key", nacl.signing.VerifyKey(self.raw))

    @classmethod
    def from_b64url(cls, x: str) -> PublicKey:
        """The key from its base64url form (the JWK ``x`` member); ValueError if it is not one."""
        return cls(b64url_decode(x))

    @property
    def x(self) -> str:
        """The base64url public key (the JWK ``x`` member)."""
        return b64url_encode(self.raw)

    def jwk(self) -> dict[str, str]:
        """The public JWK (RFC 8037), with ``kid``."""
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid}

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's signature over ``message``."""
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True


@dataclass(frozen=True)
class DeviceKey:
    """A gateway's Ed25519 private key (the 32-byte seed) and its public half."""

    seed: bytes = field(repr=False)
    public: PublicKey = field(init=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != _KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is {_KEY_BYTES} bytes, not {len(self.seed)}")
        signing_key = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signing_key", signing_key)
        object.__setattr__(self, "public", PublicKey(bytes(signing_key.verify_key)))

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def private_jwk(self) -> dict[str, str]:
        return {**self.public.jwk(), "d": b64url_encode(self.seed)}


def create_key_file(path: Path) -> DeviceKey:
    """Generate a key and write it to ``path`` with mode 0600.

    Refuses (KeyFileError) to overwrite an existing file: replacing a device key
    silently would orphan the device's enrolment. The parent folder must exist.
    """
    key = DeviceKey.generate()
    text = json.dumps(key.private_jwk(), indent=2) + "\n"
    try:
        # O_EXCL: never follow or replace what is there; the mode is set at creation,
        # so the secret is never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to replace a device key") from None
    except OSError as error:
        raise KeyFileError(path, f"cannot be created: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask may have narrowed it further; fine
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return key


def load_key_file(path: Path) -> DeviceKey:
    """Read a key file written by :func:`create_key_file` (or any Ed25519 private JWK).

    Raises KeyFileError when the file is missing, group- or world-accessible, not a
    private Ed25519 JWK, or its ``kid`` (if present) is not the key's thumbprint.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(path, "does not exist (create it with: gridclear-edge keygen)") from None
    except OSError as error:
        raise KeyFileError(path, f"cannot be opened: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(path, "is not a regular file")
        if mode & 0o077:
            raise KeyFileError(
                path,
                f"is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                f"a private key must be 0600: chmod 600 {path}",
            )
        data = handle.read(64 * 1024)
    try:
        jwk: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(path, "is not JSON (expected an Ed25519 private JWK)") from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise KeyFileError(path, 'is not an Ed25519 JWK ("kty": "OKP", "crv": "Ed25519")')
    try:
        key = DeviceKey(b64url_decode(str(jwk["d"])))
    except KeyError:
        raise KeyFileError(path, 'has no private part "d"') from None
    except ValueError as error:
        raise KeyFileError(path, f'has an invalid "d": {error}') from None
    if "x" in jwk and jwk["x"] != key.public.x:
        raise KeyFileError(path, '"x" does not match the private key')
    if "kid" in jwk and jwk["kid"] != key.kid:
        raise KeyFileError(path, f'"kid" is not the key\'s thumbprint {key.kid}')
    return key
