"""The service's Solana key files: the oracle and the settlement authority (DESIGN §9).

A key file is what ``solana-keygen new -o FILE`` writes: a JSON array of the 64
bytes of the keypair (the 32-byte secret seed, then the public key), so operators
can make, inspect and back up keys with Solana's own tools and hand them to
gridclear unchanged.

Contracts
=========

- :func:`create_key_file` writes a new key with mode 0600 and never replaces a file:
  the key is written to a temporary file in the same folder (0600 from its creation)
  and linked into place, so the path either does not exist or holds a whole key,
  and a key already there (which may control funds) is never overwritten.
- :func:`load_key_file` refuses a file that its group or others can access in any
  way, as ssh does, naming the path and the fix (``chmod 600 PATH``); also a link,
  something other than a regular file, and anything but 64 bytes whose public half
  matches the secret.
- The secret is never in a message, a ``repr`` or a log line: a
  :class:`ServiceKey` shows its public key only and cannot be pickled, and errors
  name the file and the problem, never the content.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, NoReturn

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "KEY_FILE_BYTES",
    "ServiceKey",
    "ServiceKeyError",
    "ServiceKeyExistsError",
    "ServiceKeyFormatError",
    "ServiceKeyMissingError",
    "ServiceKeyPermissionError",
    "create_key_file",
    "load_key_file",
]

KEY_FILE_BYTES = 64
_MAX_FILE_BYTES = 4096  # a 64-number array with generous whitespace; more is not a key


class ServiceKeyError(GridclearCloudError, OSError):
    """A service key file cannot be used; the message names the file and the problem."""

    code = "service_key"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"service key file {path}: {problem}")

    def __str__(self) -> str:
        # OSError would format its own args; keep the one message.
        return f"service key file {self.path}: {self.problem}"


class ServiceKeyExistsError(ServiceKeyError):
    """A key file is already at the path; it is never replaced."""

    code = "service_key_exists"


class ServiceKeyMissingError(ServiceKeyError):
    """No key file is at the path."""

    code = "service_key_missing"


class ServiceKeyPermissionError(ServiceKeyError):
    """The key file is accessible by its group or others, or is not a regular file."""

    code = "service_key_permissions"


class ServiceKeyFormatError(ServiceKeyError):
    """The file is not a Solana keypair (a JSON array of 64 bytes, public half matching)."""

    code = "service_key_malformed"


class ServiceKey:
    """A service's Solana keypair. Its ``repr`` and ``str`` show the public key only.

    ``pubkey`` is computed once (``Keypair.pubkey()`` recomputes it on each call);
    ``keypair`` is what solders signs with.
    """

    __slots__ = ("_keypair", "pubkey")

    def __init__(self, keypair: Keypair) -> None:
        self._keypair = keypair
        self.pubkey: Pubkey = keypair.pubkey()

    @classmethod
    def generate(cls) -> ServiceKey:
        return cls(Keypair())

    @property
    def keypair(self) -> Keypair:
        return self._keypair

    def __repr__(self) -> str:
        return f"ServiceKey(pubkey={self.pubkey})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceKey) and self._keypair == other._keypair

    def __hash__(self) -> int:
        return hash(self.pubkey)

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the secret into a queue, a cache or a crash dump.
        raise TypeError("a ServiceKey is not pickled: load it from its key file")


def create_key_file(path: Path, *, keypair: Keypair | None = None) -> ServiceKey:
    """Write ``keypair`` (a new one by default) to ``path`` with mode 0600.

    Raises :class:`ServiceKeyExistsError` when anything is at ``path`` (it is left as
    it was), and :class:`ServiceKeyError` when the folder cannot take the file.
    """
    key = ServiceKey(keypair if keypair is not None else Keypair())
    text = key.keypair.to_json()  # solana-keygen's format: [b0,b1,...,b63]
    if path.exists() or path.is_symlink():
        raise ServiceKeyExistsError(path, "already exists; refusing to replace a key")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        # O_EXCL with the mode at creation: the secret is never readable by others,
        # not even for a moment, and nothing already there is followed or replaced.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise ServiceKeyError(path, f"cannot be created: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails when the path exists: atomic and never overwriting (rename
        # would replace a file created there since the check above).
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise ServiceKeyExistsError(path, "already exists; refusing to replace a key") from None
        except OSError as error:
            raise ServiceKeyError(path, f"cannot be created: {error.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    _sync_folder(path.parent)
    return key


def _sync_folder(folder: Path) -> None:
    # The new name must survive a crash too, not only the content.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_key_file(path: Path) -> ServiceKey:
    """Read a key file written by :func:`create_key_file` or ``solana-keygen``.

    Raises :class:`ServiceKeyMissingError`, :class:`ServiceKeyPermissionError` (the
    message says ``chmod 600 PATH``) or :class:`ServiceKeyFormatError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ServiceKeyMissingError(
            path, "does not exist (create it with: solana-keygen new -o PATH)"
        ) from None
    except OSError as error:
        raise ServiceKeyPermissionError(path, f"cannot be opened: {error.strerror}") from None
    # fstat before fdopen: Python refuses to open a folder's descriptor as a file.
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ServiceKeyPermissionError(path, "is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if mode & 0o077:
            raise ServiceKeyPermissionError(
                path,
                f"is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                f"a private key must be readable by its owner only: chmod 600 {path}",
            )
        data = handle.read(_MAX_FILE_BYTES + 1)
    if len(data) > _MAX_FILE_BYTES:
        raise ServiceKeyFormatError(path, f"is larger than a key file ({_MAX_FILE_BYTES} bytes)")
    try:
        numbers: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ServiceKeyFormatError(path, "is not JSON (expected an array of 64 bytes)") from None
    if (
        not isinstance(numbers, list)
        or len(numbers) != KEY_FILE_BYTES
        or not all(type(n) is int and 0 <= n <= 255 for n in numbers)
    ):
        raise ServiceKeyFormatError(path, "is not a JSON array of 64 numbers from 0 to 255")
    try:
        keypair = Keypair.from_bytes(bytes(numbers))
    except ValueError:
        raise ServiceKeyFormatError(
            path, "its last 32 bytes are not the public key of its first 32"
        ) from None
    return ServiceKey(keypair)
