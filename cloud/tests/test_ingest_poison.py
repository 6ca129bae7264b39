"""Poison messages against a real broker and worker: each ends in quarantine with a reason,
the worker stays up, and the good messages behind them are stored.

Once, one 13 kB message (a JWS header of 5,000 nested arrays) raised RecursionError in
the worker, which exited without acknowledging it; the broker sent it again to the
restarted worker, and ingest stopped for good.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping

import psycopg
import pytest
from cloud.tests.ingest_support import (
    Gateway,
    Publisher,
    count,
    metric,
    register,
    running_worker,
    wait_for,
)

from gridclear.cloud.ingest.verify import Accepted, IngestReason, KeyRecord, Rejected, classify
from gridclear.cloud.ingest.writer import BatchWriter, QuarantineCap
from gridclear.shared._b64 import b64url_encode
from gridclear.shared.jws import sign_compact
from gridclear.shared.protocol import ReadingsPayload, payload_digest
from gridclear.shared.readings import Reading
from gridclear.shared.topics import readings_topic

BOMB = b"[" * 5000 + b"]" * 5000


def _payload(gateway: Gateway, **changes: object) -> dict[str, object]:
    """A valid payload of the gateway's next sequence number, as a dict to spoil."""
    gateway.seq += 1
    data: dict[str, object] = {
        "v": 1,
        "device_id": gateway.device_id,
        "seq": gateway.seq,
        "signed_ms": 1_767_225_600_000,
        "prev": None,
        "clock": {"synced": True},
        "readings": [{"meter": "m1", "ts_ms": 1_767_225_600_000 + gateway.seq, "import_wh": 1}],
    }
    return data | changes


def _signed(gateway: Gateway, data: dict[str, object] | bytes) -> str:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return sign_compact(body, gateway.key)


def _reasons(url: str, device_id: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT reason FROM quarantine WHERE device_id = %s ORDER BY id", (device_id,)
        ).fetchall()
    return [str(reason) for (reason,) in rows]


def _stored(url: str, device_id: str) -> int:
    return count(
        url,
        "SELECT count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s",
        device_id,
    )


@pytest.fixture
def gateway(migrated_db: str) -> Gateway:
    gw = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gw)
    return gw


def test_nesting_bombs_and_huge_strings_are_quarantined_and_the_worker_goes_on(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, gateway: Gateway, publisher: Publisher
) -> None:
    good_before = gateway.sign()
    unsigned_header_bomb = f"{b64url_encode(BOMB)}.{good_before.token.split('.')[1]}.AAAA"
    assert len(unsigned_header_bomb) < 14_000
    signed_payload_bomb = _signed(gateway, BOMB)
    nested_body = (
        json.dumps(_payload(gateway))
        .encode()
        .replace(b'"readings": [', b'"readings": [' + BOMB + b", ")
    )
    assert BOMB in nested_body
    nested_reading = _signed(gateway, nested_body)
    # About 1 MiB: the most the broker passes on (max_packet_size, deploy/mosquitto).
    huge_string = "x" * 1_040_000
    huge_status = json.dumps(
        {
            "v": 1,
            "device_id": gateway.device_id,
            "state": "online",
            "ts_ms": 1,
            "agent": huge_string,
        }
    )
    huge_reading = _signed(
        gateway, _payload(gateway, readings=[{"meter": "x" * 700_000, "ts_ms": 1, "import_wh": 1}])
    )
    # Nested past the bound but short of any parser's own limit.
    nested_header = b64url_encode(b'{"alg":"Ed25519","kid":' + b"[" * 40 + b"]" * 40 + b"}")
    shallow_bomb = f"{nested_header}.{good_before.token.split('.')[1]}.AAAA"
    poison = {
        "unsigned header bomb": (unsigned_header_bomb, "malformed"),
        "signed payload bomb": (signed_payload_bomb, "invalid_payload"),
        "deeply nested readings entry": (nested_reading, "invalid_payload"),
        "1 MiB string in a reading": (huge_reading, "too_large"),
        "header nested past the bound": (shallow_bomb, "malformed"),
    }

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        publisher.send(gateway, good_before)
        for body, _ in poison.values():
            publisher.send(gateway, body)
        publisher.status(gateway.device_id, huge_status)
        wait_for(
            lambda: len(_reasons(migrated_db, gateway.device_id)) == len(poison) + 1,
            what="every poison message in quarantine",
        )
        # The worker is still there: the next good messages are stored.
        gateway.seq = good_before.payload.seq
        gateway.prev = good_before.digest
        after = [gateway.sign() for _ in range(3)]
        for message in after:
            publisher.send(gateway, message)
        wait_for(lambda: _stored(migrated_db, gateway.device_id) == 4, what="the good messages")
    assert sorted(_reasons(migrated_db, gateway.device_id)) == sorted(
        [reason for _, reason in poison.values()] + ["too_large"]
    )
    assert metric(worker, "gridclear_ingest_quarantined_total", reason="malformed") == 2
    assert metric(worker, "gridclear_ingest_messages_total", outcome="stored") == 4
    chain = count(
        migrated_db,
        "SELECT count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s AND r.chain IN ('first', 'ok')",
        gateway.device_id,
    )
    assert chain == 4


def test_every_refused_message_leaves_a_row_even_with_text_postgresql_cannot_hold(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, gateway: Gateway, publisher: Publisher
) -> None:
    payload = gateway.sign().token.split(".")[1]

    def header(kid: str) -> str:
        return b64url_encode(json.dumps({"alg": "Ed25519", "kid": kid}).encode())

    signature = "A" * 86
    kids = [
        "k\x00id",  # NUL: PostgreSQL's text cannot hold it
        "k\ud800id",  # a lone surrogate: not even UTF-8
        gateway.key.kid + "\x00",
    ]
    cases = [f"{header(kid)}.{payload}.{signature}" for kid in kids]
    status = json.dumps(
        {"v": 1, "device_id": gateway.device_id, "state": "online", "ts_ms": 1, "agent": "a\x00b"}
    )
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        for body in cases:
            publisher.send(gateway, body)
        publisher.status(gateway.device_id, status)
        wait_for(
            lambda: len(_reasons(migrated_db, gateway.device_id)) == len(cases) + 1,
            what="a quarantine row for every refused message",
        )
        good = gateway.sign()
        publisher.send(gateway, good)
        wait_for(lambda: _stored(migrated_db, gateway.device_id) == 1, what="the good message")
    assert sorted(_reasons(migrated_db, gateway.device_id)) == sorted(
        ["unknown_key", "unknown_key", "unknown_key", "store_failed"]
    )
    with psycopg.connect(migrated_db) as conn:
        stored_kids = [
            str(kid)
            for (kid,) in conn.execute(
                "SELECT kid FROM quarantine WHERE device_id = %s AND kid IS NOT NULL ORDER BY id",
                (gateway.device_id,),
            ).fetchall()
        ]
    # The kid is kept, escaped, so that an operator can still read what was claimed.
    assert stored_kids == ["k\\x00id", "k\\ud800id", gateway.key.kid + "\\x00"]
    assert metric(worker, "gridclear_ingest_quarantined_total", reason="unknown_key") == 3


def test_a_version_of_true_is_an_unknown_version(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, gateway: Gateway, publisher: Publisher
) -> None:
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, _signed(gateway, _payload(gateway, v=True)))
        publisher.send(gateway, _signed(gateway, _payload(gateway, v=1.0)))
        wait_for(lambda: len(_reasons(migrated_db, gateway.device_id)) == 2)
    assert _reasons(migrated_db, gateway.device_id) == ["unknown_version", "unknown_version"]
    assert _stored(migrated_db, gateway.device_id) == 0


@pytest.mark.parametrize("field", ["voltage_v", "current_a", "frequency_hz"])
def test_nan_in_a_signed_reading_is_refused_and_never_stored(
    migrated_db: str,
    mqtt_url: str,
    mqtt_topic_prefix: str,
    gateway: Gateway,
    publisher: Publisher,
    field: str,
) -> None:
    value: object = float("nan") if field == "frequency_hz" else [230.0, float("nan")]
    reading = {"meter": "m1", "ts_ms": 1_767_225_600_000, "import_wh": 1, field: value}
    body = json.dumps(_payload(gateway, readings=[reading])).encode()
    assert b"NaN" in body
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, _signed(gateway, body))
        wait_for(lambda: len(_reasons(migrated_db, gateway.device_id)) == 1)
    assert _reasons(migrated_db, gateway.device_id) == ["invalid_payload"]
    assert _stored(migrated_db, gateway.device_id) == 0
    nan_rows = count(
        migrated_db,
        "SELECT count(*) FROM readings WHERE 'NaN' IN (frequency_hz, voltage_l2, current_l2)",
    )
    assert nan_rows == 0


def test_the_quarantine_is_capped_per_device_and_window_and_counts_the_rest(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, gateway: Gateway, publisher: Publisher
) -> None:
    other = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, other)
    junk = 200
    with running_worker(
        migrated_db, mqtt_url, mqtt_topic_prefix, quarantine_cap=20, quarantine_window_s=1e9
    ) as worker:
        for i in range(junk):
            publisher.send(gateway, f"junk {i}".encode())
        for i in range(5):
            publisher.send(other, f"junk {i}".encode())

        def suppressed() -> float:
            return metric(
                worker, "gridclear_ingest_quarantine_suppressed_total", reason="malformed"
            )

        wait_for(lambda: suppressed() == junk - 20, what="the flood counted")
        wait_for(lambda: len(_reasons(migrated_db, other.device_id)) == 5, what="the other's")
        # The flood stops nothing else: the gateway's next good message is stored.
        publisher.send(gateway, gateway.sign())
        wait_for(lambda: _stored(migrated_db, gateway.device_id) == 1, what="the good message")
    assert _reasons(migrated_db, gateway.device_id) == ["malformed"] * 20
    with psycopg.connect(migrated_db) as conn:
        windows = conn.execute(
            "SELECT kept, suppressed FROM quarantine_windows WHERE device_id = %s",
            (gateway.device_id,),
        ).fetchall()
        sample = conn.execute(
            "SELECT body FROM quarantine WHERE device_id = %s ORDER BY id LIMIT 1",
            (gateway.device_id,),
        ).fetchone()
    # One window (31 years long, for a test that must not straddle two).
    assert windows == [(20, junk - 20)]
    assert sample is not None
    assert bytes(sample[0]).startswith(b"junk ")
    assert metric(worker, "gridclear_ingest_quarantined_total", reason="malformed") == junk + 5
    assert metric(worker, "gridclear_ingest_messages_total", outcome="quarantined") == junk + 5


class _BrokenKeys(Mapping[str, KeyRecord]):
    """Keys whose lookup fails: a stand-in for any bug inside a check."""

    def __getitem__(self, kid: str) -> KeyRecord:
        raise RuntimeError("the key store broke")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_an_exception_inside_a_check_is_an_internal_error_not_a_crash(gateway: Gateway) -> None:
    token = gateway.sign().token.encode()
    verdict = classify(readings_topic(gateway.device_id), token, keys=_BrokenKeys(), received_ms=1)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is IngestReason.INTERNAL_ERROR
    assert "RuntimeError" in verdict.detail
    assert verdict.device_id == gateway.device_id
    assert verdict.body == token


def test_a_message_the_writer_cannot_handle_is_quarantined_and_its_batch_stored(
    migrated_db: str, gateway: Gateway
) -> None:
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(
            "SELECT id FROM devices WHERE device_id = %s", (gateway.device_id,)
        ).fetchone()
    assert row is not None
    device_pk = int(row[0])
    items: list[Accepted] = []
    for meter in ("m1", "m\ud800", "m2"):
        message = gateway.sign()
        # Built without validation: a value no check lets through today (a lone
        # surrogate cannot be encoded for PostgreSQL), standing for whatever might.
        reading = Reading.model_construct(meter=meter, ts_ms=1_767_225_600_000, import_wh=1)
        payload = message.payload.model_copy(update={"readings": (reading,)})
        items.append(_accepted(gateway, message.token, payload, device_pk))
    writer = BatchWriter(migrated_db, quarantine_cap=QuarantineCap())
    try:
        result = writer.write(items)
    finally:
        writer.close()
    assert result.stored_messages == 2
    assert [r.reason for r in result.rejected] == [IngestReason.INTERNAL_ERROR]
    assert "UnicodeEncodeError" in result.rejected[0].detail
    assert _reasons(migrated_db, gateway.device_id) == ["internal_error"]
    assert _stored(migrated_db, gateway.device_id) == 2


def _accepted(gateway: Gateway, token: str, payload: ReadingsPayload, device_pk: int) -> Accepted:
    return Accepted(
        topic=readings_topic(gateway.device_id),
        token=token.encode(),
        device_pk=device_pk,
        kid=gateway.key.kid,
        payload=payload,
        digest=bytes.fromhex(payload_digest(token.split(".")[1].encode())),
        received_ms=1_767_225_600_000,
    )
