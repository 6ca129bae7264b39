"""docs/PROTOCOL.md's worked examples are what the code produces, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

from joserfc import jws
from joserfc.jwk import OKPKey

from gridclear.shared.jws import b64url_decode
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import (
    decode_payload,
    encode_payload,
    payload_digest,
    sign_readings,
    verify_readings,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
RFC8037_KEY = DeviceKey(b64url_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"))


def _examples() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- example: ([\w-]+) -->\n```text\n(.*?)\n```", text, re.DOTALL)
    return dict(blocks)


def test_the_document_has_its_examples() -> None:
    assert set(_examples()) == {"payload-1", "digest-1", "token-1", "payload-2", "token-2"}
    assert RFC8037_KEY.kid in DOC.read_text(encoding="utf-8")


def test_payloads_encode_to_the_documented_bytes_and_sign_to_the_documented_tokens() -> None:
    examples = _examples()
    for n in ("1", "2"):
        shown = examples[f"payload-{n}"].encode()
        payload = decode_payload(shown, expected_device_id="gw-1")
        assert encode_payload(payload) == shown
        assert sign_readings(payload, RFC8037_KEY).token == examples[f"token-{n}"]
    assert payload_digest(examples["payload-1"].encode()) == examples["digest-1"]
    second = decode_payload(examples["payload-2"].encode())
    assert second.prev == examples["digest-1"]


def test_documented_tokens_verify_with_ours_and_with_joserfc() -> None:
    theirs = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_KEY.public.x})
    for n in ("1", "2"):
        token = _examples()[f"token-{n}"]
        verified = verify_readings(token, key=RFC8037_KEY.public, expected_device_id="gw-1")
        assert verified.payload_bytes == _examples()[f"payload-{n}"].encode()
        assert jws.deserialize_compact(token, theirs, algorithms=["Ed25519"]).payload == (
            verified.payload_bytes
        )
