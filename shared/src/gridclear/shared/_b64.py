"""Unpadded base64url (RFC 7515 §2), strict on input."""

from __future__ import annotations

import base64
import binascii

# base64url to the standard alphabet for binascii, and every character that is not
# base64url (the standard alphabet's "+" and "/", padding) to one that binascii's
# strict mode refuses.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raise ValueError on padding, other characters or bad length.

    Strict on purpose: a lenient decoder accepts several spellings of the same bytes,
    and a signed message must have exactly one.
    """
    tail = len(text) % 4
    if tail == 1:
        raise ValueError("not unpadded base64url")
    # UnicodeEncodeError and binascii.Error, raised below on bad input, are ValueErrors.
    standard = text.encode("ascii").translate(_TO_STANDARD)
    data = binascii.a2b_base64(standard + b"=" * (-tail % 4), strict_mode=True)
    # Non-canonical trailing bits (e.g. "Ah" and "Ag" both decode to b"\x02") would
    # let two different tokens carry the same bytes. Only the last, partial group can
    # have them: encode its bytes again and compare.
    if tail and b64url_encode(data[len(data) - tail + 1 :]) != text[-tail:]:
        raise ValueError("non-canonical base64url")
    return data


__all__ = ["b64url_decode", "b64url_encode"]
