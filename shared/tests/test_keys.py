"""Device key files: created private, refused when exposed, readable by any JOSE tool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey

from gridclear.shared.errors import KeyFileError
from gridclear.shared.keys import DeviceKey, PublicKey, create_key_file, load_key_file

# RFC 8037 appendix A.1: an independent check of the thumbprint and the public key.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_created_file_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = create_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key_file(path) == key


def test_existing_key_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = create_key_file(path)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path)
    assert load_key_file(path) == key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o644])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="gridclear-edge keygen"):
        load_key_file(tmp_path / "nope.key")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "not JSON"),
        ('{"kty": "EC", "crv": "P-256"}', "not an Ed25519 JWK"),
        ('{"kty": "OKP", "crv": "Ed25519", "x": "' + RFC8037_X + '"}', 'no private part "d"'),
        ('{"kty": "OKP", "crv": "Ed25519", "d": "short"}', 'invalid "d"'),
        (
            '{"kty": "OKP", "crv": "Ed25519", "d": "' + RFC8037_D + '", "kid": "other"}',
            "not the key's thumbprint",
        ),
    ],
)
def test_bad_key_files_name_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "device.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(KeyFileError, match=problem) as caught:
        load_key_file(path)
    assert caught.value.path == path


def test_rfc8037_key_gives_the_rfc_public_key_and_thumbprint() -> None:
    from gridclear.shared._b64 import b64url_decode

    key = DeviceKey(b64url_decode(RFC8037_D))
    assert key.public.x == RFC8037_X
    assert key.kid == RFC8037_THUMBPRINT


def test_key_file_is_a_jwk_an_independent_library_reads(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = create_key_file(path)
    theirs = OKPKey.import_key(json.loads(path.read_text()))
    assert theirs.thumbprint() == key.kid
    assert theirs.as_dict(private=False)["x"] == key.public.x


def test_public_key_round_trips_through_its_text_form() -> None:
    key = DeviceKey.generate()
    assert PublicKey.from_b64url(key.public.x) == key.public
    with pytest.raises(ValueError, match="32 bytes"):
        PublicKey.from_b64url("AAAA")
