"""Every way a message is refused lands in quarantine with its reason and a counter,
and nothing of it reaches the readings."""

from __future__ import annotations

import base64
import json
import time
import uuid

import psycopg
from cloud.tests.ingest_support import (
    Gateway,
    Publisher,
    count,
    metric,
    register,
    run_db,
    running_worker,
    wait_for,
)

from gridclear.cloud import devices
from gridclear.shared.jws import sign_compact
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import (
    MAX_MESSAGE_BYTES,
    ClockState,
    ReadingsPayload,
    sign_readings,
)
from gridclear.shared.readings import Reading


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _quarantine(url: str, device_id: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT reason, size FROM quarantine WHERE device_id = %s ORDER BY id", (device_id,)
        ).fetchall()
    return [(str(r), int(s)) for r, s in rows]


def test_refusals_are_quarantined_with_their_reason_and_never_stored(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    victim = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    other = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, victim)
    register(migrated_db, other)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    good = victim.sign()
    cases: dict[str, bytes | str] = {}

    # A forged signature: the victim's kid, signed with an attacker's key.
    attacker = DeviceKey.generate()
    header = _b64(json.dumps({"alg": "Ed25519", "kid": victim.key.kid}).encode())
    payload = good.token.split(".")[1]
    forged_sig = _b64(attacker.sign(f"{header}.{payload}".encode()))
    cases["bad_signature"] = f"{header}.{payload}.{forged_sig}"
    # Content altered after signing.
    altered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    altered["readings"][0]["import_wh"] += 1000
    h, _, s = good.token.split(".")
    cases["bad_signature/altered"] = f"{h}.{_b64(json.dumps(altered).encode())}.{s}"
    # The other gateway's valid message, published under the victim's topic.
    cases["device_mismatch"] = other.sign().token
    # A key nobody registered.
    stranger = Gateway(device_id=victim.device_id)
    cases["unknown_key"] = stranger.sign().token
    cases["malformed"] = b"\x00\xff garbage \x01"
    cases["too_large"] = b"x" * (MAX_MESSAGE_BYTES + 1)
    v2 = json.dumps({"v": 2, "device_id": victim.device_id, "seq": 99}).encode()
    cases["unknown_version"] = sign_compact(v2, victim.key)
    cases["invalid_payload"] = sign_compact(
        json.dumps({"v": 1, "device_id": victim.device_id}).encode(), victim.key
    )
    # Valid and signed, but a register no database column can hold: refused, not a crash.
    huge = ReadingsPayload(
        device_id=victim.device_id,
        seq=1000,
        signed_ms=good.payload.signed_ms,
        prev=None,
        clock=ClockState(synced=True),
        readings=(Reading(meter="m1", ts_ms=good.payload.signed_ms, import_wh=2**64),),
    )
    cases["invalid_payload/out_of_range"] = sign_readings(huge, victim.key).token
    none_header = _b64(json.dumps({"alg": "none", "kid": victim.key.kid}).encode())
    cases["bad_algorithm"] = f"{none_header}.{payload}."

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        publisher.send(victim, good)
        for body in cases.values():
            publisher.send(victim, body)
        # A replay of the good message is a duplicate (skipped, counted), not an error.
        publisher.send(victim, good)
        # The same sequence number with other content is a conflict.
        victim.seq -= 1
        publisher.send(victim, victim.sign(signed_ms=good.payload.signed_ms + 1))
        # A device id no topic may carry.
        publisher.publish_raw("gridclear/v1/devices/bad id!/readings", good.token)
        expected = len(cases) + 1
        wait_for(
            lambda: (
                count(
                    migrated_db,
                    "SELECT count(*) FROM quarantine WHERE device_id = %s",
                    victim.device_id,
                )
                == expected
            ),
            what=f"{expected} quarantined",
        )
        wait_for(
            lambda: metric(worker, "gridclear_ingest_messages_total", outcome="duplicate") == 1
        )
        wait_for(
            lambda: (
                count(
                    migrated_db,
                    "SELECT count(*) FROM quarantine WHERE topic LIKE %s",
                    f"{mqtt_topic_prefix}%bad id!%",
                )
                == 1
            ),
            what="the bad topic quarantined",
        )
    publisher.close()

    reasons = [reason for reason, _ in _quarantine(migrated_db, victim.device_id)]
    want = sorted([name.split("/")[0] for name in cases] + ["seq_conflict"])
    assert sorted(reasons) == want
    sizes = dict(_quarantine(migrated_db, victim.device_id))
    assert sizes["too_large"] == MAX_MESSAGE_BYTES + 1
    # A bounded copy of the bytes is kept, never the whole flood.
    assert (
        count(
            migrated_db,
            "SELECT max(length(body)) FROM quarantine WHERE device_id = %s",
            victim.device_id,
        )
        <= 16 * 1024
    )
    # Only the one good message was stored.
    assert (
        count(
            migrated_db,
            "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_pk"
            " WHERE d.device_id = %s",
            victim.device_id,
        )
        == 1
    )

    def counted(reason: str) -> float:
        return metric(worker, "gridclear_ingest_quarantined_total", reason=reason)

    assert counted("bad_signature") == 2
    assert counted("bad_topic") == 1
    assert sum(counted(r) for r in set(reasons) | {"bad_topic"}) == len(cases) + 2


def test_revoked_and_retired_keys_are_judged_by_signing_time(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    now_ms = time.time_ns() // 1_000_000
    before_rotation = gateway.sign(signed_ms=now_ms - 60_000)
    new_key = DeviceKey.generate()

    async def rotate(conn: object) -> None:
        await devices.rotate_key(conn, device_id=gateway.device_id, public_key=new_key.public.x)  # type: ignore[arg-type]

    run_db(migrated_db, rotate)
    after_rotation = gateway.sign()  # the retired key, signing now
    gateway.key = new_key

    async def revoke(conn: object) -> None:
        await devices.revoke_key(conn, kid=new_key.kid, reason="stolen")  # type: ignore[arg-type]

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, before_rotation)  # signed before the rotation: still valid
        publisher.send(gateway, after_rotation)
        wait_for(lambda: len(_quarantine(migrated_db, gateway.device_id)) == 1)
        run_db(migrated_db, revoke)
        publisher.send(gateway, gateway.sign())  # signed after the revocation
        wait_for(lambda: len(_quarantine(migrated_db, gateway.device_id)) == 2)
    publisher.close()
    assert [r for r, _ in _quarantine(migrated_db, gateway.device_id)] == [
        "key_not_valid",
        "key_revoked",
    ]
    assert (
        count(
            migrated_db,
            "SELECT count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
            " WHERE d.device_id = %s",
            gateway.device_id,
        )
        == 1
    )
