"""Fuzzing what a worker receives: raw MQTT payloads and mutated JWS segments.

Mutations start from valid signed messages: a segment replaced, truncated, bit-flipped
or nested; payload values swapped for NaN, booleans, NULs, lone surrogates, huge
numbers, deep nesting; most re-signed with the device's key, so that they reach the
payload checks behind the signature. ``classify()`` must give every one a verdict
(never raise), with a known reason when it refuses; and a batch of them written by the
real writer must end with each message stored (or a duplicate of a stored one) or
quarantined.
"""

from __future__ import annotations

import json
import uuid

import psycopg
from cloud.tests.ingest_support import Gateway, count, register
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridclear.cloud.ingest.verify import (
    Accepted,
    IngestReason,
    KeyRecord,
    Rejected,
    StatusUpdate,
    classify,
)
from gridclear.cloud.ingest.writer import BatchWriter, QuarantineCap
from gridclear.shared._b64 import b64url_encode
from gridclear.shared.jws import sign_compact
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import (
    ClockState,
    ReadingsPayload,
    encode_payload,
)
from gridclear.shared.readings import Quality, Reading
from gridclear.shared.topics import readings_topic, status_topic

KEY = DeviceKey(bytes(range(32)))
DEVICE = "gw-fuzz"
KEYS = {KEY.kid: KeyRecord(kid=KEY.kid, device_pk=1, device_id=DEVICE, public=KEY.public)}
_PLACEHOLDER = "\x01spot\x01"

NASTY = [
    "NaN", "Infinity", "-Infinity", "true", "false", "null", "1e400", "-0", "1.0", "0.5",
    str(2**64), str(-(2**63) - 1), str(10**400), '"\\u0000"', '"a\\u0000b"', '"\\ud800"',
    '"1"', '""', "[]", "{}", '"' + "x" * 70_000 + '"', "[" * 5000 + "]" * 5000,
    "{" * 40 + "}" * 40, '{"a":' * 3000 + "1" + "}" * 3000, "[" * 17 + "]" * 17,
    '[NaN, 1, true]', '["estimated", "estimated"]', '["nonsense"]',
]  # fmt: skip
"""JSON texts to put where a value was (some of them not JSON at all)."""

FIELDS = [
    ("v",), ("device_id",), ("seq",), ("signed_ms",), ("prev",), ("clock",), ("thinned",),
    ("readings",), ("clock", "synced"), ("clock", "max_error_ms"),
    ("readings", 0), ("readings", 0, "meter"), ("readings", 0, "ts_ms"),
    ("readings", 0, "import_wh"), ("readings", 0, "export_wh"), ("readings", 0, "power_w"),
    ("readings", 0, "voltage_v"), ("readings", 0, "current_a"), ("readings", 0, "frequency_hz"),
    ("readings", 0, "quality"), ("readings", 0, "voltage_v", 1), ("extra",),
]  # fmt: skip
"""Where in a payload a value is replaced."""

KNOWN_REASONS = set(IngestReason)


@st.composite
def payloads(draw: st.DrawFn, device_id: str = DEVICE) -> dict[str, object]:
    """A valid v1 payload, as the dict that encodes it."""
    reading = Reading(
        meter=draw(st.sampled_from(["m1", "m2", "SN-21013345"])),
        ts_ms=draw(st.integers(1_767_225_600_000, 1_767_312_000_000)),
        import_wh=draw(st.integers(0, 10**9)),
        voltage_v=(230.1, 229.8, 231.0),
        current_a=(1.5,),
        frequency_hz=50.0,
        quality=frozenset(draw(st.sets(st.sampled_from(list(Quality))))),
    )
    payload = ReadingsPayload(
        device_id=device_id,
        seq=draw(st.integers(1, 10**6)),
        signed_ms=1_767_225_600_000,
        prev=draw(st.sampled_from([None, "ab" * 32])),
        clock=ClockState(synced=draw(st.booleans())),
        readings=(reading,),
    )
    data: dict[str, object] = json.loads(encode_payload(payload))
    return data


def _spoil(data: dict[str, object], path: tuple[str | int, ...], nasty: str) -> bytes:
    """``data`` as JSON text with the value at ``path`` replaced by the text ``nasty``."""
    node: object = data
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    container = node
    last = path[-1]
    if isinstance(container, list) and isinstance(last, int) and last >= len(container):
        container.append(None)
    container[last] = _PLACEHOLDER  # type: ignore[index]
    text = json.dumps(data, separators=(",", ":"))
    return text.replace(json.dumps(_PLACEHOLDER), nasty).encode("utf-8", "surrogatepass")


def _bit_flip(text: str, position: int, bit: int) -> str:
    raw = bytearray(text.encode())
    if raw:
        raw[position % len(raw)] ^= 1 << bit
    return raw.decode("latin-1")


@st.composite
def tokens(draw: st.DrawFn, device_id: str = DEVICE, key: DeviceKey = KEY) -> bytes:
    """A valid signed message, or one mutation of it."""
    data = draw(payloads(device_id))
    kind = draw(st.sampled_from(["valid", "value", "value-unsigned", "segment", "raw", "header"]))
    if kind == "valid":
        return sign_compact(json.dumps(data).encode(), key).encode()
    if kind in ("value", "value-unsigned"):
        body = _spoil(data, draw(st.sampled_from(FIELDS)), draw(st.sampled_from(NASTY)))
        token = sign_compact(body, key)
        if kind == "value-unsigned":
            header, _, signature = token.split(".")
            token = f"{header}.{b64url_encode(body + b' ')}.{signature}"
        return token.encode()
    if kind == "raw":
        return draw(st.binary(max_size=2048))
    token = sign_compact(json.dumps(data).encode(), key)
    parts = token.split(".")
    if kind == "header":
        header: dict[str, object] = {
            "alg": draw(st.sampled_from(["Ed25519", "EdDSA", "none", "HS256", "", "ed25519"])),
            "kid": draw(st.sampled_from([key.kid, key.kid + "\x00", "\ud800", "", "x" * 5000])),
        }
        header_text = (
            _spoil(
                header,
                (draw(st.sampled_from(["alg", "kid", "crit", "typ"])),),
                draw(st.sampled_from(NASTY)),
            )
            if draw(st.booleans())
            else json.dumps(header).encode("utf-8", "surrogatepass")
        )
        parts[0] = b64url_encode(header_text)
        return ".".join(parts).encode()
    # One segment replaced, truncated, bit-flipped or nested; or a segment added or lost.
    index = draw(st.integers(0, 2))
    operation = draw(
        st.sampled_from(["replace", "truncate", "flip", "nest", "nasty", "add", "drop", "empty"])
    )
    if operation == "replace":
        parts[index] = b64url_encode(draw(st.binary(max_size=512)))
    elif operation == "truncate":
        parts[index] = parts[index][: draw(st.integers(0, max(0, len(parts[index]) - 1)))]
    elif operation == "flip":
        parts[index] = _bit_flip(parts[index], draw(st.integers(0, 10**6)), draw(st.integers(0, 7)))
    elif operation == "nest":
        depth = draw(st.sampled_from([17, 200, 1000, 5000]))
        parts[index] = b64url_encode(b"[" * depth + b"]" * depth)
    elif operation == "nasty":
        parts[index] = b64url_encode(draw(st.sampled_from(NASTY)).encode("utf-8", "surrogatepass"))
    elif operation == "add":
        parts.insert(index, parts[index])
    elif operation == "drop":
        del parts[index]
    else:
        parts[index] = ""
    return ".".join(parts).encode("utf-8", "surrogatepass")


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A topic and a body, as the broker hands them to a worker."""
    where = draw(st.sampled_from(["readings", "readings", "readings", "status", "other"]))
    if where == "readings":
        return readings_topic(DEVICE), draw(tokens())
    if where == "status":
        body = draw(
            st.one_of(
                st.binary(max_size=256),
                st.sampled_from(NASTY).map(str.encode),
                st.builds(
                    lambda spot, nasty: _spoil(
                        {"v": 1, "device_id": DEVICE, "state": "online", "ts_ms": 1, "agent": "a"},
                        (spot,),
                        nasty,
                    ),
                    st.sampled_from(["v", "device_id", "state", "ts_ms", "agent", "last_seq"]),
                    st.sampled_from(NASTY),
                ),
            )
        )
        return status_topic(DEVICE), body
    return draw(st.text(max_size=80)), draw(st.binary(max_size=64))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages())
def test_classify_gives_every_message_a_verdict_and_never_raises(
    message: tuple[str, bytes],
) -> None:
    topic, body = message
    verdict = classify(topic, body, keys=KEYS, received_ms=1_767_225_600_000)
    assert isinstance(verdict, Accepted | StatusUpdate | Rejected)
    if isinstance(verdict, Rejected):
        assert verdict.reason in KNOWN_REASONS
        # No refusal of a fuzzed message may come from a check breaking.
        assert verdict.reason is not IngestReason.INTERNAL_ERROR, verdict.detail
    if isinstance(verdict, Accepted):
        for reading in verdict.payload.readings:
            for value in (*(reading.voltage_v or ()), *(reading.current_a or ())):
                assert value == value, "NaN accepted"
        assert type(verdict.payload.v) is int


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_batch_of_mutated_messages_ends_stored_or_quarantined_through_the_writer(
    migrated_db: str, data: st.DataObject
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(
            "SELECT id FROM devices WHERE device_id = %s", (gateway.device_id,)
        ).fetchone()
    assert row is not None
    keys = {
        gateway.key.kid: KeyRecord(
            kid=gateway.key.kid,
            device_pk=int(row[0]),
            device_id=gateway.device_id,
            public=gateway.key.public,
        )
    }
    bodies = data.draw(
        st.lists(tokens(device_id=gateway.device_id, key=gateway.key), min_size=20, max_size=40)
    )
    topic = readings_topic(gateway.device_id)
    items = [classify(topic, body, keys=keys, received_ms=1_767_225_600_000) for body in bodies]
    writer = BatchWriter(migrated_db, quarantine_cap=QuarantineCap(rows=1000))
    try:
        result = writer.write(items)
    finally:
        writer.close()

    def stored() -> int:
        return count(
            migrated_db,
            "SELECT count(*) FROM raw_messages m JOIN devices d ON d.id = m.device_pk"
            " WHERE d.device_id = %s",
            gateway.device_id,
        )

    quarantined = count(
        migrated_db, "SELECT count(*) FROM quarantine WHERE device_id = %s", gateway.device_id
    )
    assert result.suppressed == []
    assert result.stored_messages + result.duplicates + len(result.rejected) == len(bodies)
    assert stored() == result.stored_messages
    assert quarantined == len(result.rejected)
    assert {r.reason for r in result.rejected} <= KNOWN_REASONS
