"""Hostile messages: nesting bombs, oversized headers, NaN and booleans posing as numbers.

Each is refused with a :class:`ProtocolError` and its stable reason, never with
another exception (a RecursionError here once stopped every ingest worker).
"""

from __future__ import annotations

import json

import pytest

from gridclear.shared import protocol
from gridclear.shared._b64 import b64url_encode
from gridclear.shared.errors import (
    InvalidPayloadError,
    MalformedMessageError,
    ProtocolError,
    Reason,
    UnknownVersionError,
)
from gridclear.shared.jws import read_header, sign_compact, verify_compact
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import (
    ClockState,
    ReadingsPayload,
    StatusMessage,
    decode_payload,
    encode_payload,
    verify_readings,
)
from gridclear.shared.readings import Reading

KEY = DeviceKey(bytes(range(32)))
BOMB = b"[" * 5000 + b"]" * 5000


def _payload() -> dict[str, object]:
    payload = ReadingsPayload(
        device_id="gw-1",
        seq=1,
        signed_ms=1_767_225_600_000,
        prev=None,
        clock=ClockState(synced=True),
        readings=(Reading(meter="m1", ts_ms=1_767_225_599_000, import_wh=5, voltage_v=(230.0,)),),
    )
    data: dict[str, object] = json.loads(encode_payload(payload))
    return data


def _signed(data: bytes) -> str:
    return sign_compact(data, KEY)


def test_an_unsigned_header_of_5000_nested_arrays_is_malformed() -> None:
    payload = b64url_encode(encode_payload(ReadingsPayload.model_validate(_payload())))
    token = f"{b64url_encode(BOMB)}.{payload}.{b64url_encode(bytes(64))}"
    for check in (
        lambda: read_header(token),
        lambda: verify_compact(token, KEY.public),
        lambda: verify_readings(token, key=KEY.public, expected_device_id="gw-1"),
    ):
        with pytest.raises(MalformedMessageError):
            check()


def test_a_header_nested_a_little_past_the_bound_is_malformed_too() -> None:
    depth = protocol.MAX_JSON_DEPTH + 1
    nested = b"[" * depth + b"]" * depth
    header = b'{"alg":"Ed25519","x":' + nested + b"}"
    with pytest.raises(MalformedMessageError, match="nested"):
        read_header(f"{b64url_encode(header)}.e30.AA")


def test_an_oversized_header_is_refused_before_it_is_decoded() -> None:
    header = json.dumps({"alg": "Ed25519", "kid": "k", "pad": "x" * 20_000}).encode()
    with pytest.raises(MalformedMessageError, match="header"):
        read_header(f"{b64url_encode(header)}.e30.AA")


def test_a_signed_payload_of_5000_nested_arrays_is_an_invalid_payload() -> None:
    with pytest.raises(InvalidPayloadError):
        verify_readings(_signed(BOMB), key=KEY.public, expected_device_id="gw-1")


@pytest.mark.parametrize("depth", [60, 250, 900, 5000])
def test_a_deeply_nested_readings_entry_is_an_invalid_payload(depth: int) -> None:
    data = _payload()
    body = (
        json.dumps(data, separators=(",", ":"))
        .encode()
        .replace(b'"readings":[', b'"readings":[' + b"[" * depth + b"]" * depth + b",")
    )
    assert body.count(b"[") > depth
    with pytest.raises(InvalidPayloadError):
        decode_payload(body)
    with pytest.raises(InvalidPayloadError):
        verify_readings(_signed(body), key=KEY.public, expected_device_id="gw-1")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    data = _payload()
    data["readings"] = [{"meter": "[" * 30 + "{" * 30, "ts_ms": 1}]
    assert decode_payload(json.dumps(data).encode()).readings[0].meter.startswith("[[[")
    assert protocol.json_depth_within(b'{"a":"\\"[[[[[[["}', 2)
    assert not protocol.json_depth_within(b'{"a":[[1]]}', 2)
    assert protocol.json_depth_within(b'{"a":[[1]]}', 3)


@pytest.mark.parametrize("version", [True, 1.0, "1", [1]])
def test_a_version_that_only_compares_equal_to_1_is_unknown(version: object) -> None:
    data = _payload() | {"v": version}
    with pytest.raises(UnknownVersionError) as caught:
        verify_readings(
            _signed(json.dumps(data).encode()), key=KEY.public, expected_device_id="gw-1"
        )
    assert caught.value.reason is Reason.UNKNOWN_VERSION


@pytest.mark.parametrize("field", ["voltage_v", "current_a", "frequency_hz"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_signed_reading_are_refused(field: str, value: str) -> None:
    data = _payload()
    reading = {"meter": "m1", "ts_ms": 1, field: "@"}
    if field != "frequency_hz":
        reading[field] = ["@"]
    data["readings"] = [reading]
    body = json.dumps(data).encode().replace(b'"@"', value.encode())
    assert value.encode() in body
    with pytest.raises(InvalidPayloadError):
        verify_readings(_signed(body), key=KEY.public, expected_device_id="gw-1")


@pytest.mark.parametrize(
    "change",
    [{"v": True}, {"ts_ms": "5"}, {"ts_ms": True}, {"last_seq": False}, {"outbox_depth": 1.0}],
)
def test_a_status_is_read_with_exact_types(change: dict[str, object]) -> None:
    data = {"v": 1, "device_id": "gw-1", "state": "online", "ts_ms": 5} | change
    with pytest.raises(ProtocolError):
        StatusMessage.decode(json.dumps(data).encode())


def test_a_good_status_still_decodes() -> None:
    data = {"v": 1, "device_id": "gw-1", "state": "online", "ts_ms": 5, "meters_failing": ["a"]}
    assert StatusMessage.decode(json.dumps(data).encode()).meters_failing == ("a",)
