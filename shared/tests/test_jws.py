"""Signed readings messages: verify only what the device signed, interoperate with JOSE."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey

from gridclear.shared._b64 import b64url_decode, b64url_encode
from gridclear.shared.errors import (
    BadSignatureError,
    DeviceMismatchError,
    InvalidPayloadError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    Reason,
    UnknownKeyError,
    UnknownVersionError,
    UnsupportedAlgorithmError,
)
from gridclear.shared.jws import read_header, sign_compact, verify_compact
from gridclear.shared.keys import DeviceKey, PublicKey
from gridclear.shared.protocol import (
    MAX_MESSAGE_BYTES,
    ClockState,
    ReadingsPayload,
    encode_payload,
    sign_readings,
    verify_readings,
)
from gridclear.shared.readings import Quality, Reading

KEY = DeviceKey(bytes(range(32)))


def _payload(device_id: str = "gw-1", seq: int = 7) -> ReadingsPayload:
    return ReadingsPayload(
        device_id=device_id,
        seq=seq,
        signed_ms=1_767_225_600_000,
        prev="ab" * 32,
        clock=ClockState(synced=True),
        readings=(
            Reading(
                meter="SN-1",
                ts_ms=1_767_225_599_870,
                import_wh=123_456,
                export_wh=7,
                power_w=-1500,
                voltage_v=(230.1, 229.8, 231.0),
                current_a=(2.5, 2.4, 2.6),
                frequency_hz=50.01,
                quality=frozenset({Quality.ESTIMATED}),
            ),
        ),
    )


def _token_with(header: dict[str, object], payload: bytes, signature: bytes) -> str:
    encoded = b64url_encode(json.dumps(header).encode())
    return f"{encoded}.{b64url_encode(payload)}.{b64url_encode(signature)}"


def test_signed_message_verifies_and_returns_the_payload() -> None:
    message = sign_readings(_payload(), KEY)
    verified = verify_readings(message.token, key=KEY.public, expected_device_id="gw-1")
    assert verified.payload == _payload()
    assert verified.payload_bytes == encode_payload(_payload())
    assert verified.digest == hashlib.sha256(verified.payload_bytes).hexdigest() == message.digest
    assert verified.header.alg == "Ed25519"
    assert verified.header.kid == KEY.kid


def test_key_lookup_by_kid() -> None:
    token = sign_readings(_payload(), KEY).token
    keys = {KEY.kid: KEY.public}
    assert verify_readings(token, key=keys.get, expected_device_id="gw-1").payload.seq == 7
    with pytest.raises(UnknownKeyError):
        verify_readings(token, key=lambda kid: None, expected_device_id="gw-1")


def test_wrong_key_is_refused() -> None:
    token = sign_readings(_payload(), KEY).token
    other = DeviceKey.generate().public
    with pytest.raises(UnknownKeyError):  # the kid names another key
        verify_readings(token, key=other, expected_device_id="gw-1")
    # Same kid claimed, other key behind it: the signature itself must fail.
    with pytest.raises(BadSignatureError):
        verify_readings(token, key=lambda kid: other, expected_device_id="gw-1")


def test_every_changed_byte_is_refused() -> None:
    token = sign_readings(_payload(), KEY).token
    for position in range(len(token)):
        original = token[position]
        for replacement in {"A", "B", "-", "."} - {original}:
            changed = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(ProtocolError):
                verify_readings(changed, key=KEY.public, expected_device_id="gw-1")


def test_other_device_in_payload_is_refused() -> None:
    token = sign_readings(_payload(device_id="gw-2"), KEY).token
    with pytest.raises(DeviceMismatchError) as caught:
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")
    assert caught.value.reason is Reason.DEVICE_MISMATCH


def test_unknown_version_is_refused_with_its_reason() -> None:
    data = json.loads(encode_payload(_payload()))
    data["v"] = 2
    token = sign_compact(json.dumps(data).encode(), KEY)
    with pytest.raises(UnknownVersionError) as caught:
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")
    assert caught.value.reason == "unknown_version"


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 0},
        {"seq": "7"},
        {"prev": "zz"},
        {"readings": [{"meter": "m", "ts_ms": 1, "import_wh": -5}]},
        {"readings": [{"meter": "m", "ts_ms": 1, "import_wh": 1.5}]},
        {"extra": True},
        {"clock": {}},
    ],
)
def test_invalid_payload_is_refused(change: dict[str, object]) -> None:
    data = json.loads(encode_payload(_payload())) | change
    token = sign_compact(json.dumps(data).encode(), KEY)
    with pytest.raises(InvalidPayloadError):
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")


@pytest.mark.parametrize("payload", [b"[]", b"not json", b'{"seq": 1}', b"\xff\xfe"])
def test_payload_that_is_not_a_v1_object_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidPayloadError):
        verify_readings(sign_compact(payload, KEY), key=KEY.public, expected_device_id="gw-1")


def test_alg_none_is_refused() -> None:
    payload = encode_payload(_payload())
    token = _token_with({"alg": "none", "kid": KEY.kid}, payload, b"")
    with pytest.raises(UnsupportedAlgorithmError):
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")


def test_hmac_with_the_public_key_as_secret_is_refused() -> None:
    # The classic confusion attack: HS256 keyed with the (public) verification key.
    payload = encode_payload(_payload())
    header = b64url_encode(json.dumps({"alg": "HS256", "kid": KEY.kid}).encode())
    signing_input = f"{header}.{b64url_encode(payload)}".encode()
    mac = hmac.new(KEY.public.raw, signing_input, hashlib.sha256).digest()
    with pytest.raises(UnsupportedAlgorithmError):
        verify_readings(
            f"{signing_input.decode()}.{b64url_encode(mac)}",
            key=KEY.public,
            expected_device_id="gw-1",
        )


def test_es256_token_from_a_jose_library_is_refused() -> None:
    token = jws.serialize_compact(
        {"alg": "ES256"}, encode_payload(_payload()), ECKey.generate_key()
    )
    with pytest.raises(UnsupportedAlgorithmError):
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")


def test_critical_extensions_are_refused() -> None:
    header = {"alg": "Ed25519", "kid": KEY.kid, "crit": ["exp"], "exp": 1}
    encoded = b64url_encode(json.dumps(header).encode())
    signing_input = f"{encoded}.{b64url_encode(b'{}')}"
    token = f"{signing_input}.{b64url_encode(KEY.sign(signing_input.encode()))}"
    with pytest.raises(MalformedMessageError, match="critical"):
        verify_compact(token, KEY.public)


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c.d", "!!!.e30.AA", "e30.e30.AA", "WyJhIl0.e30.AA", "é.e30.AA"]
)
def test_garbage_is_refused_as_malformed(token: str) -> None:
    with pytest.raises((MalformedMessageError, UnsupportedAlgorithmError)):
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")


def test_padded_base64_is_refused() -> None:
    token = sign_readings(_payload(), KEY).token
    header, payload, signature = token.split(".")
    padded = base64.urlsafe_b64encode(base64.urlsafe_b64decode(header + "==")).decode()
    if padded != header:
        with pytest.raises(MalformedMessageError):
            read_header(f"{padded}.{payload}.{signature}")


def test_oversized_message_is_refused_before_any_work() -> None:
    with pytest.raises(MessageTooLargeError):
        verify_readings("a" * (MAX_MESSAGE_BYTES + 1), key=KEY.public, expected_device_id="gw-1")


# ---- interoperability with an independent JOSE implementation (joserfc) ----


def _their_public_key(key: PublicKey) -> OKPKey:
    return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": key.x})


def _their_private_key(key: DeviceKey) -> OKPKey:
    return OKPKey.import_key(dict[str, str | list[str]](key.private_jwk()))


def test_our_tokens_verify_with_joserfc() -> None:
    message = sign_readings(_payload(), KEY)
    result = jws.deserialize_compact(
        message.token, _their_public_key(KEY.public), algorithms=["Ed25519"]
    )
    assert result.headers() == {"alg": "Ed25519", "kid": KEY.kid}
    assert result.payload == encode_payload(_payload())


def test_joserfc_ed25519_tokens_verify_with_ours() -> None:
    payload = encode_payload(_payload())
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": KEY.kid}, payload, _their_private_key(KEY), algorithms=["Ed25519"]
    )
    verified = verify_readings(token, key=KEY.public, expected_device_id="gw-1")
    assert verified.payload_bytes == payload


def test_joserfc_deprecated_eddsa_tokens_verify_with_ours() -> None:
    payload = encode_payload(_payload())
    with pytest.warns(SecurityWarning, match="deprecated"):
        token = jws.serialize_compact(
            {"alg": "EdDSA", "kid": KEY.kid}, payload, _their_private_key(KEY), algorithms=["EdDSA"]
        )
    verified = verify_readings(token, key=KEY.public, expected_device_id="gw-1")
    assert verified.header.alg == "EdDSA"


def test_joserfc_token_signed_by_another_key_is_refused() -> None:
    payload = encode_payload(_payload())
    other = OKPKey.generate_key("Ed25519")
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": KEY.kid}, payload, other, algorithms=["Ed25519"]
    )
    with pytest.raises(BadSignatureError):
        verify_readings(token, key=KEY.public, expected_device_id="gw-1")


def _b64url_reference(text: str) -> bytes:
    """The plain, slow spelling of strict unpadded base64url."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if any(c not in alphabet for c in text) or len(text) % 4 == 1:
        raise ValueError(text)
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise ValueError(text)
    return data


@given(
    st.text(
        alphabet=st.sampled_from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \n.\x00é"
        ),
        max_size=14,
    )
    | st.binary(max_size=10).map(b64url_encode)
)
@example("Ag")
@example("Ah")
@example("AAA=")
@example("AA+/")
@example("AAE")
@example("AAF")
def test_b64url_decode_accepts_exactly_the_canonical_spellings(text: str) -> None:
    try:
        expected: bytes | None = _b64url_reference(text)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match=r"."):
            b64url_decode(text)
    else:
        assert b64url_decode(text) == expected
