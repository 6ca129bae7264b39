"""JWS compact serialization (RFC 7515) with Ed25519 (RFC 8037, RFC 9864), and nothing else.

Signing writes ``alg: "Ed25519"``, the fully-specified name of RFC 9864, and the
signer's ``kid``. Verification accepts ``Ed25519`` and the deprecated ``EdDSA``
(which, with an Ed25519 key, means the same), and refuses every other algorithm,
``none`` included, before looking at the key: the algorithm is never chosen by the
token. The signature covers the exact payload bytes; nothing is re-encoded.

A general JOSE library would do this too, but it brings its own crypto backend
(``cryptography``) onto the gateway and accepts far more than we want to; the part
we need is a few lines over PyNaCl, and a test checks it against an independent
JOSE implementation in both directions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gridclear.shared._b64 import b64url_decode, b64url_encode
from gridclear.shared.errors import (
    BadSignatureError,
    MalformedMessageError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from gridclear.shared.keys import DeviceKey, PublicKey

__all__ = [
    "ACCEPTED_ALGORITHMS",
    "ALGORITHM",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "JwsHeader",
    "KeyLookup",
    "b64url_decode",
    "b64url_encode",
    "json_depth_within",
    "read_header",
    "sign_compact",
    "verify_compact",
]

ALGORITHM = "Ed25519"
"""What we write: the fully-specified algorithm name of RFC 9864."""
ACCEPTED_ALGORITHMS = frozenset({"Ed25519", "EdDSA"})
"""What we accept: RFC 9864's name and the deprecated RFC 8037 name (Ed25519 keys only)."""

MAX_HEADER_BYTES = 1024
"""The longest encoded protected header accepted; ours is about 100 characters."""
MAX_JSON_DEPTH = 16
"""The deepest nesting of arrays and objects accepted in any JSON we parse.

The protocol needs 4 (a payload, its ``readings``, a reading, its ``voltage_v``);
json and pydantic recurse per level and fail with RecursionError or their own limit
at a few hundred, so hostile nesting is refused before either parser sees it.
"""

_SIGNATURE_BYTES = 64

# For json_depth_within: every byte deleted but brackets and quotes; the brackets
# themselves as one kind, since only depth matters and the parser refuses mismatches.
_BRACKETS_AND_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")

KeyLookup = Callable[[str], PublicKey | None]
"""Finds the public key for a ``kid``, or None when none is known."""


@dataclass(frozen=True)
class JwsHeader:
    """The protected header of a token, checked for shape but not yet for its signature."""

    alg: str
    kid: str | None
    raw: dict[str, Any]


def sign_compact(payload: bytes, key: DeviceKey) -> str:
    """The compact JWS of ``payload``: ``header.payload.signature``, all base64url."""
    header = json.dumps({"alg": ALGORITHM, "kid": key.kid}, separators=(",", ":"))
    signing_input = f"{b64url_encode(header.encode('ascii'))}.{b64url_encode(payload)}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def json_depth_within(data: bytes, limit: int) -> bool:
    """Whether the arrays and objects in ``data`` nest at most ``limit`` deep.

    Never parses, is linear in ``len(data)`` on any input, and costs a few C-level
    passes over the bytes (no Python loop per character): the brackets outside
    strings are kept, as one kind, and the innermost pairs removed once per level.
    Brackets that do not pair up are for the parser to refuse; a lone opening one
    counts as a level, so ``False`` means "too deep, or not JSON".
    """
    skeleton = data.translate(_ONE_KIND, _BRACKETS_AND_QUOTES)
    if len(skeleton) - skeleton.count(b'"') <= limit:
        return True
    if b"\\" in data:
        # An escape pair cannot hold a bracket, and an escaped quote does not end a
        # string. (Outside strings a backslash is not JSON: no parser gets past it.)
        unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        skeleton = unescaped.translate(_ONE_KIND, _BRACKETS_AND_QUOTES)
    # A string without brackets is now '""'. When no quote is left, no string held
    # any; otherwise keep what lies between a closing and the next opening quote.
    brackets = skeleton.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(skeleton.split(b'"')[::2])
    levels = 0
    while b"[]" in brackets:
        if levels == limit:
            return False
        brackets = brackets.replace(b"[]", b"")
        levels += 1
    # What is left opens levels that never close, around what was removed.
    return levels + brackets.count(b"[") <= limit


def _split(token: str | bytes) -> tuple[str, str, str]:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedMessageError("a JWS compact serialization is ASCII") from None
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedMessageError(
            f"a JWS compact serialization has 3 dot-separated parts, not {len(parts)}"
        )
    return parts[0], parts[1], parts[2]


def read_header(token: str | bytes) -> JwsHeader:
    """The token's protected header, checked: ``alg`` accepted, no critical extensions.

    Use it to find the key (by ``kid``) before :func:`verify_compact`; nothing in it is
    trustworthy until the signature has been verified.
    """
    encoded_header, _, _ = _split(token)
    return _parse_header(encoded_header)


@functools.lru_cache(maxsize=4096)
def _parse_header(encoded_header: str) -> JwsHeader:
    """The checked header, remembered by its exact encoding (refusals are not).

    A gateway sends the same header with every message, so a receiver decodes each
    one once, not per message; the answer depends on nothing but the text, and the
    cache is bounded. The ``raw`` dict is shared between the callers: read it only.
    The header's size and nesting are bounded before it is parsed: nothing has
    been verified yet, so it is whatever anyone sent.
    """
    if len(encoded_header) > MAX_HEADER_BYTES:
        raise MalformedMessageError(
            f"the header is {len(encoded_header)} characters, over {MAX_HEADER_BYTES}"
        )
    try:
        decoded = b64url_decode(encoded_header)
    except ValueError:
        raise MalformedMessageError("the header is not base64url-encoded JSON") from None
    if not json_depth_within(decoded, MAX_JSON_DEPTH):
        raise MalformedMessageError(f"the header is nested deeper than {MAX_JSON_DEPTH}")
    try:
        header: Any = json.loads(decoded)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        raise MalformedMessageError("the header is not base64url-encoded JSON") from None
    if not isinstance(header, dict):
        raise MalformedMessageError("the header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"alg {alg!r} is not accepted; only {', '.join(sorted(ACCEPTED_ALGORITHMS))}"
        )
    if "crit" in header:
        # RFC 7515 §4.1.11: extensions we do not understand must make the token invalid.
        raise MalformedMessageError("critical header extensions are not supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedMessageError("kid is not a string")
    return JwsHeader(alg=alg, kid=kid, raw=header)


def verify_compact(token: str | bytes, key: PublicKey | KeyLookup) -> tuple[JwsHeader, bytes]:
    """Verify a compact JWS and return its header and the exact payload bytes.

    ``key`` is the expected public key, or a lookup from ``kid`` to key. With a key,
    a ``kid`` in the token that names another key is refused too (UnknownKeyError).
    Raises a :class:`~gridclear.shared.errors.ProtocolError` subclass on any failure.
    """
    encoded_header, encoded_payload, encoded_signature = _split(token)
    header = _parse_header(encoded_header)
    if isinstance(key, PublicKey):
        if header.kid is not None and header.kid != key.kid:
            raise UnknownKeyError(f"kid {header.kid!r} is not the expected key {key.kid!r}")
        public = key
    else:
        if header.kid is None:
            raise UnknownKeyError("the token names no kid")
        found = key(header.kid)
        if found is None:
            raise UnknownKeyError(f"no key is known for kid {header.kid!r}")
        public = found
    try:
        payload = b64url_decode(encoded_payload)
        signature = b64url_decode(encoded_signature)
    except ValueError:
        raise MalformedMessageError("the payload or signature is not base64url") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise BadSignatureError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
    # The token is ASCII (checked by _split): its first two parts, as they came.
    length = len(encoded_header) + 1 + len(encoded_payload)
    signing_input = token[:length] if isinstance(token, bytes) else token[:length].encode("ascii")
    if not public.verify(signing_input, signature):
        raise BadSignatureError(f"the signature does not verify with key {public.kid}")
    return header, payload
