"""Sign-In-With-Solana messages and Ed25519 wallet signatures (pure, no I/O).

The message follows the Sign-In-With-Solana text format (itself EIP-4361's,
with Solana's wording), which wallets display to the user:

    example.org wants you to sign in with your Solana account:
    <base58 address>

    <statement>

    URI: https://example.org
    Version: 1
    Chain ID: mainnet
    Nonce: <nonce>
    Issued At: 2026-01-01T00:00:00.000Z
    Expiration Time: 2026-01-01T00:05:00.000Z

The server never trusts a parsed message: it compares the text it receives,
byte for byte, with the text it issued for that nonce. Parsing only finds the
nonce and gives a precise reason when the two differ.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import base58
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "MessageFormatError",
    "SiwsMessage",
    "build_message",
    "format_time",
    "is_solana_address",
    "new_nonce",
    "parse_message",
    "verify_signature",
]

_HEADER = " wants you to sign in with your Solana account:"
_MAX_MESSAGE_CHARS = 2048


class MessageFormatError(GridclearCloudError, ValueError):
    """The text is not a sign-in message of the expected shape."""

    code = "malformed_message"


@dataclass(frozen=True)
class SiwsMessage:
    """The fields of a sign-in message."""

    domain: str
    address: str
    statement: str
    uri: str
    version: str
    chain_id: str
    nonce: str
    issued_at: str
    expiration_time: str


def new_nonce() -> str:
    """128 random bits as 32 hex characters (alphanumeric, as the format requires)."""
    return secrets.token_hex(16)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a ``Z``, as wallets and JavaScript print it."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def build_message(
    *,
    domain: str,
    address: str,
    statement: str,
    uri: str,
    chain_id: str,
    nonce: str,
    issued_at: datetime,
    expires_at: datetime,
) -> str:
    """The exact text the wallet signs."""
    return (
        f"{domain}{_HEADER}\n{address}\n\n{statement}\n\n"
        f"URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\n"
        f"Issued At: {format_time(issued_at)}\n"
        f"Expiration Time: {format_time(expires_at)}"
    )


_FIELDS = {
    "URI": "uri",
    "Version": "version",
    "Chain ID": "chain_id",
    "Nonce": "nonce",
    "Issued At": "issued_at",
    "Expiration Time": "expiration_time",
}
_FIELD_LINE = re.compile(r"^(URI|Version|Chain ID|Nonce|Issued At|Expiration Time): (.+)$")


def parse_message(text: str) -> SiwsMessage:
    """The fields of ``text``; raises :class:`MessageFormatError` when it is not one."""
    if len(text) > _MAX_MESSAGE_CHARS:
        raise MessageFormatError("the message is too long")
    lines = text.split("\n")
    if len(lines) < 10 or not lines[0].endswith(_HEADER):
        raise MessageFormatError("the message does not start with a sign-in header")
    domain = lines[0][: -len(_HEADER)]
    address = lines[1]
    if lines[2] != "" or lines[4] != "":
        raise MessageFormatError("the message's statement is not where it should be")
    values: dict[str, str] = {}
    for line in lines[5:]:
        match = _FIELD_LINE.match(line)
        if match is None or _FIELDS[match.group(1)] in values:
            raise MessageFormatError(f"unexpected line in the message: {line[:60]!r}")
        values[_FIELDS[match.group(1)]] = match.group(2)
    missing = sorted(set(_FIELDS.values()) - set(values))
    if missing:
        raise MessageFormatError(f"the message lacks {', '.join(missing)}")
    return SiwsMessage(domain=domain, address=address, statement=lines[3], **values)


def is_solana_address(text: str) -> bool:
    """Whether ``text`` is a base58 32-byte public key (what a Solana address is)."""
    if not 32 <= len(text) <= 44:
        return False
    try:
        return len(base58.b58decode(text)) == 32
    except ValueError:
        return False


def verify_signature(*, address: str, message: str, signature: str) -> bool:
    """Whether ``signature`` (base58) is the wallet's Ed25519 signature of ``message``.

    Any malformed input (address, signature encoding or length) is ``False``, not an error.
    """
    try:
        key_bytes = base58.b58decode(address)
        signature_bytes = base58.b58decode(signature)
    except ValueError:
        return False
    if len(key_bytes) != 32 or len(signature_bytes) != 64:
        return False
    try:
        VerifyKey(key_bytes).verify(message.encode("utf-8"), signature_bytes)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
