"""Service key files (ledger.keys): 0600, never overwritten, solana-keygen's format,
and the secret in no message, repr or log line."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import threading
from pathlib import Path

import base58
import pytest
from solders.keypair import Keypair

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import keys


def secret_forms(keypair: Keypair) -> list[str]:
    """The ways a secret could leak into text: its JSON, base58, hex, the seed alone."""
    raw = bytes(keypair)
    return [
        keypair.to_json(),
        str(keypair),
        base58.b58encode(raw).decode(),
        base58.b58encode(raw[:32]).decode(),
        raw.hex(),
        raw[:32].hex(),
        str(list(raw[:32]))[1:-1],
    ]


def test_a_created_key_is_0600_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "settlement-authority.json"
    created = keys.create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = keys.load_key_file(path)
    assert loaded == created
    assert loaded.pubkey == created.keypair.pubkey()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_the_file_is_solana_keygens_format_both_ways(tmp_path: Path) -> None:
    # solana-keygen writes serde_json's array of the 64 bytes, no spaces, no newline:
    # the same text as solders' Keypair.to_json().
    keypair = Keypair()
    theirs = tmp_path / "from-keygen.json"
    theirs.write_text(json.dumps(list(bytes(keypair)), separators=(",", ":")))
    theirs.chmod(0o600)
    assert keys.load_key_file(theirs).keypair == keypair

    ours = tmp_path / "ours.json"
    keys.create_key_file(ours, keypair=keypair)
    assert ours.read_text() == theirs.read_text()
    assert Keypair.from_json(ours.read_text()) == keypair
    # Whitespace, as a hand-edited or pretty-printed file has, is fine.
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(list(bytes(keypair)), indent=2) + "\n")
    pretty.chmod(0o600)
    assert keys.load_key_file(pretty).keypair == keypair


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "oracle.json"
    first = keys.create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(keys.ServiceKeyExistsError) as caught:
        keys.create_key_file(path)
    assert caught.value.code == "service_key_exists"
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert keys.load_key_file(path) == first
    # A dangling link is something at the path too.
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(keys.ServiceKeyExistsError):
        keys.create_key_file(link)
    assert not (tmp_path / "nowhere.json").exists()


def test_concurrent_creators_leave_exactly_one_key(tmp_path: Path) -> None:
    path = tmp_path / "race.json"
    barrier = threading.Barrier(8)
    won: list[keys.ServiceKey] = []
    lost: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            won.append(keys.create_key_file(path))
        except keys.ServiceKeyExistsError as refused:
            lost.append(refused)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert len(lost) == 7
    assert keys.load_key_file(path) == won[0]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610])
def test_a_file_others_can_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "authority.json"
    keys.create_key_file(path)
    path.chmod(mode)
    with pytest.raises(keys.ServiceKeyPermissionError) as caught:
        keys.load_key_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message
    assert caught.value.code == "service_key_permissions"
    assert isinstance(caught.value, GridclearCloudError)
    path.chmod(0o600)
    keys.load_key_file(path)
    path.chmod(0o400)  # read-only for its owner is fine
    keys.load_key_file(path)


def test_a_link_or_a_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    keys.create_key_file(target)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(keys.ServiceKeyPermissionError):
        keys.load_key_file(link)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(keys.ServiceKeyError):
        keys.load_key_file(folder)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"d": "x"}', "64 numbers"),
        (json.dumps(list(range(63))).encode(), "64 numbers"),
        (json.dumps([256] * 64).encode(), "64 numbers"),
        (json.dumps([True] * 64).encode(), "64 numbers"),
        (b" " * 5000, "larger"),
    ],
)
def test_a_malformed_file_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(keys.ServiceKeyFormatError, match=problem):
        keys.load_key_file(path)


def test_a_public_half_that_does_not_match_is_refused_without_echoing(tmp_path: Path) -> None:
    keypair = Keypair()
    raw = bytearray(bytes(keypair))
    raw[40] ^= 1
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(list(raw)))
    path.chmod(0o600)
    with pytest.raises(keys.ServiceKeyFormatError, match="public key") as caught:
        keys.load_key_file(path)
    assert not any(form in str(caught.value) for form in secret_forms(keypair))
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(keys.ServiceKeyMissingError, match="solana-keygen new") as caught:
        keys.load_key_file(tmp_path / "absent.json")
    assert caught.value.code == "service_key_missing"


def test_the_secret_is_in_no_repr_str_or_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "k.json"
    key = keys.create_key_file(path)
    loaded = keys.load_key_file(path)
    logging.getLogger("gridclear.test").info("loaded %s / %r", loaded, loaded)
    shown = [repr(key), str(key), repr(loaded), f"{loaded}", caplog.text, repr([loaded])]
    for form in secret_forms(key.keypair):
        assert not any(form in text for text in shown)
    assert str(key.pubkey) in repr(key)
    assert str(key.keypair) == str(Keypair.from_bytes(bytes(key.keypair)))  # the secret is there
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(key)


def test_a_folder_that_cannot_take_the_file_is_a_typed_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes anywhere; a missing folder fails for everyone.
        target = tmp_path / "missing" / "k.json"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "k.json"
    with pytest.raises(keys.ServiceKeyError, match="cannot be created"):
        keys.create_key_file(target)
