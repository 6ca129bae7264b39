"""Ingest end to end through the real broker and database: stored once, acknowledged,
duplicates skipped, the hash chain judged, statuses applied, load shared by two workers."""

from __future__ import annotations

import uuid
from typing import Literal

import psycopg
import pytest
from cloud.tests.ingest_support import (
    RECENT_MS,
    Gateway,
    Publisher,
    count,
    metric,
    register,
    running_worker,
    wait_for,
)

from gridclear.shared.protocol import StatusMessage
from gridclear.shared.readings import Reading


def _gateway(url: str) -> Gateway:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(url, gateway)
    return gateway


def _readings(url: str, device_id: str) -> int:
    return count(
        url,
        "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s",
        device_id,
    )


def _messages(url: str, device_id: str) -> int:
    return count(
        url,
        "SELECT count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s",
        device_id,
    )


@pytest.mark.storage_paths  # dedupe and the hash chain depend on the table's keys
def test_each_message_is_stored_once_with_its_readings_and_raw_bytes(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, publisher: Publisher
) -> None:
    gateway = _gateway(migrated_db)
    messages = []
    for i in range(40):
        now = RECENT_MS + i * 3000
        readings = [
            Reading(meter="m1", ts_ms=now, import_wh=5000 + i, export_wh=7, power_w=1200),
            Reading(meter="m2", ts_ms=now + 1, import_wh=100 + i, voltage_v=(230.1, 231.0, 229.9)),
        ]
        messages.append(gateway.sign(readings, signed_ms=now + 10))
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        for message in messages:
            publisher.send(gateway, message)
        wait_for(lambda: _readings(migrated_db, gateway.device_id) == 80, what="80 readings")
        # The same messages again (a gateway resending after a lost PUBACK): skipped.
        for message in messages[:10]:
            publisher.send(gateway, message)
        wait_for(
            lambda: metric(worker, "gridclear_ingest_messages_total", outcome="duplicate") == 10,
            what="10 duplicates counted",
        )
    assert _readings(migrated_db, gateway.device_id) == 80
    assert _messages(migrated_db, gateway.device_id) == 40
    with psycopg.connect(migrated_db) as conn:
        (token,) = conn.execute(
            "SELECT token FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
            " WHERE d.device_id = %s AND seq = 1",
            (gateway.device_id,),
        ).fetchone()  # type: ignore[misc]
        chains: dict[str, int] = dict(
            conn.execute(
                "SELECT chain, count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
                " WHERE d.device_id = %s GROUP BY chain",
                (gateway.device_id,),
            ).fetchall()
        )
        volts = conn.execute(
            "SELECT voltage_l1, voltage_l2, voltage_l3, import_wh FROM readings r"
            " JOIN meters m ON m.id = r.meter_id WHERE m.name = 'm2' AND r.device_pk ="
            " (SELECT id FROM devices WHERE device_id = %s) ORDER BY ts LIMIT 1",
            (gateway.device_id,),
        ).fetchone()
    # The exact bytes as signed are kept, so anyone can verify them again.
    assert bytes(token).decode() == messages[0].token
    assert chains == {"first": 1, "ok": 39}
    assert volts is not None
    assert volts[3] == 100
    assert volts[0] == pytest.approx(230.1, abs=0.01)
    assert count(migrated_db, "SELECT count(*) FROM quarantine") == 0


@pytest.mark.storage_paths  # dedupe and the hash chain depend on the table's keys
def test_hash_chain_gaps_are_flagged_and_healed_and_breaks_are_recorded(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, publisher: Publisher
) -> None:
    gateway = _gateway(migrated_db)
    first, second, third = gateway.sign(), gateway.sign(), gateway.sign()
    gateway.prev = "0" * 64  # a gateway whose chain is broken (a message was altered)
    fourth = gateway.sign()

    def chain(seq: int) -> str:
        with psycopg.connect(migrated_db) as conn:
            row = conn.execute(
                "SELECT chain FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
                " WHERE d.device_id = %s AND seq = %s",
                (gateway.device_id, seq),
            ).fetchone()
        return str(row[0]) if row else "missing"

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, first)
        publisher.send(gateway, third)
        wait_for(lambda: chain(3) != "missing", what="message 3 stored")
        assert chain(3) == "gap"
        publisher.send(gateway, second)  # the late predecessor fills the gap
        wait_for(lambda: chain(2) != "missing", what="message 2 stored")
        publisher.send(gateway, fourth)
        wait_for(lambda: chain(4) != "missing", what="message 4 stored")
    assert [chain(s) for s in (1, 2, 3, 4)] == ["first", "ok", "ok", "broken"]


def test_two_workers_on_one_shared_subscription_divide_the_load(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, publisher: Publisher
) -> None:
    gateways = [_gateway(migrated_db) for _ in range(4)]
    group = f"g{uuid.uuid4().hex[:8]}"
    with (
        running_worker(migrated_db, mqtt_url, mqtt_topic_prefix, group=group) as one,
        running_worker(migrated_db, mqtt_url, mqtt_topic_prefix, group=group) as two,
    ):
        for _ in range(50):
            for gateway in gateways:
                publisher.send(gateway, gateway.sign())

        def total() -> int:
            return sum(_readings(migrated_db, g.device_id) for g in gateways)

        wait_for(lambda: total() == 200, what="200 readings")
    stored = [metric(w, "gridclear_ingest_messages_total", outcome="stored") for w in (one, two)]
    assert sum(stored) == 200
    assert all(n > 0 for n in stored), stored
    assert sum(_messages(migrated_db, g.device_id) for g in gateways) == 200
    for worker in (one, two):
        assert metric(worker, "gridclear_ingest_messages_total", outcome="duplicate") == 0


def test_status_messages_set_online_offline_and_ignore_older_ones(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, publisher: Publisher
) -> None:
    gateway = _gateway(migrated_db)

    def state() -> tuple[str, int] | None:
        with psycopg.connect(migrated_db) as conn:
            row = conn.execute(
                "SELECT state, last_seq FROM device_status s JOIN devices d"
                " ON d.id = s.device_pk WHERE d.device_id = %s",
                (gateway.device_id,),
            ).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    def status(state: Literal["online", "offline"], ts_ms: int, last_seq: int) -> bytes:
        return StatusMessage(
            device_id=gateway.device_id, state=state, ts_ms=ts_ms, last_seq=last_seq
        ).encode()

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.status(gateway.device_id, status("online", 2_000, 17))
        wait_for(lambda: state() == ("online", 17), what="online")
        publisher.status(gateway.device_id, status("offline", 1_000, 3))  # older: ignored
        publisher.status(gateway.device_id, status("offline", 3_000, 18))
        wait_for(lambda: state() == ("offline", 18), what="offline")
