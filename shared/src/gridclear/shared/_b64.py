"""Unpadded base64url (RFC 7515 §2), strict on input."""

from __future__ import annotations

import base64
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raise ValueError on padding, other characters or bad length.

    Strict on purpose: a lenient decoder accepts several spellings of the same bytes,
    and a signed message must have exactly one.
    """
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    # binascii.Error, raised below on bad input, is a ValueError.
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Non-canonical trailing bits (e.g. "Ah" and "Ag" both decode to b"\x02") would
    # let two different tokens carry the same bytes.
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


__all__ = ["b64url_decode", "b64url_encode"]
