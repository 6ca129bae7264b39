"""Far-off times: a century ahead, or 1970 (a gateway whose clock reset).

One such signed reading, for a meter that had readings, once stalled every ingest
worker: the interval refresh walked every slot in between, in the writer's thread.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
from cloud.tests.api_support import fresh_database
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
from gridclear.cloud.ingest.plausibility import TimeWindow, implausible_time
from gridclear.cloud.ingest.verify import Accepted, IngestReason, KeyRecord, Rejected, classify
from gridclear.cloud.storage.migrations import discover_migrations, migrate
from gridclear.shared.protocol import ClockState, ReadingsPayload
from gridclear.shared.readings import Reading
from gridclear.shared.topics import readings_topic

HOUR = 3600 * 1000
DAY = 24 * HOUR
YEAR = 365 * DAY


def _now() -> int:
    return time.time_ns() // 1_000_000


def _payload(signed_ms: int, *ts_ms: int) -> ReadingsPayload:
    return ReadingsPayload(
        device_id="gw-1",
        seq=1,
        signed_ms=signed_ms,
        prev=None,
        clock=ClockState(synced=True),
        readings=tuple(Reading(meter="m1", ts_ms=ts, import_wh=1) for ts in ts_ms),
    )


@pytest.mark.parametrize(
    ("signed", "readings"),
    [
        (0, (0,)),  # now
        (-5 * 60_000, (-6 * 60_000,)),  # a clock a little behind
        (5 * 60_000, (5 * 60_000,)),  # a little ahead
        (-20 * DAY, (-30 * DAY, -29 * DAY)),  # an outbox draining after an outage
        (0, (-60 * DAY,)),  # thinned and re-signed at the end of a long outage
    ],
)
def test_the_default_window_lets_clock_error_and_backlogs_in(
    signed: int, readings: tuple[int, ...]
) -> None:
    now = _now()
    payload = _payload(now + signed, *(now + r for r in readings))
    assert implausible_time(payload, received_ms=now, window=TimeWindow()) is None


@pytest.mark.parametrize(
    ("signed", "readings", "says"),
    [
        (100 * YEAR, (100 * YEAR,), "after it was received"),
        (0, (100 * YEAR,), "after the message was signed or received"),
        (0, (HOUR,), "after the message was signed or received"),
        (-HOUR, (0,), "after the message was signed or received"),
        (-_now(), (-_now(),), "before it was received"),  # 1970
        (0, (-_now(),), "before the message was signed or received"),
        (0, (-100 * DAY,), "before the message was signed or received"),
    ],
)
def test_the_default_window_refuses_the_absurd(
    signed: int, readings: tuple[int, ...], says: str
) -> None:
    now = _now()
    payload = _payload(now + signed, *(now + r for r in readings))
    detail = implausible_time(payload, received_ms=now, window=TimeWindow())
    assert detail is not None
    assert says in detail


def test_classify_quarantines_an_implausible_message_with_its_bytes() -> None:
    gateway = Gateway(device_id="gw-1")
    keys = {
        gateway.key.public.kid: KeyRecord(
            kid=gateway.key.public.kid, device_pk=1, device_id="gw-1", public=gateway.key.public
        )
    }
    now = _now()
    message = gateway.sign([Reading(meter="m1", ts_ms=now + 100 * YEAR, import_wh=1)])
    item = classify(readings_topic("gw-1"), message.token, keys=keys, received_ms=now)
    assert isinstance(item, Rejected)
    assert item.reason is IngestReason.IMPLAUSIBLE_TIME
    assert (item.body, item.kid, item.seq) == (message.token, gateway.key.public.kid, 1)
    # The window is the caller's to set.
    wide = TimeWindow(max_ahead_ms=200 * YEAR)
    accepted = classify(
        readings_topic("gw-1"), message.token, keys=keys, received_ms=now, time_window=wide
    )
    assert isinstance(accepted, Accepted)


def _quarantined(url: str, device_id: str) -> list[tuple[str, int, bytes]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT reason, seq, body FROM quarantine WHERE device_id = %s ORDER BY seq",
            (device_id,),
        ).fetchall()
    return [(str(r), int(s), bytes(b)) for r, s, b in rows]


def test_far_off_readings_are_quarantined_and_ingest_goes_on(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    clocked = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    other = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, clocked)
    register(migrated_db, other)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    now = _now()

    def stored(gateway: Gateway) -> int:
        return count(
            migrated_db,
            "SELECT count(*) FROM readings r JOIN meters m ON m.id = r.meter_id"
            " JOIN devices d ON d.id = m.device_pk WHERE d.device_id = %s",
            gateway.device_id,
        )

    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        publisher.send(clocked, clocked.sign([Reading(meter="m1", ts_ms=now, import_wh=100)]))
        wait_for(lambda: stored(clocked) == 1, what="the meter's first reading")
        ahead = clocked.sign([Reading(meter="m1", ts_ms=now + 100 * YEAR, import_wh=200)])
        reset = clocked.sign([Reading(meter="m1", ts_ms=1_000, import_wh=300)], signed_ms=2_000)
        dated_1970 = clocked.sign([Reading(meter="m1", ts_ms=1_000, import_wh=300)])
        for message in (ahead, reset, dated_1970):
            publisher.send(clocked, message)
        publisher.send(other, other.sign([Reading(meter="m1", ts_ms=_now(), import_wh=5)]))
        wait_for(lambda: stored(other) == 1, what="the other gateway's reading")
        wait_for(lambda: len(_quarantined(migrated_db, clocked.device_id)) == 3, what="quarantine")
        assert metric(worker, "gridclear_ingest_quarantined_total", reason="implausible_time") == 2
        # The refresh that follows is small: only the slot around the plausible sample.
        wait_for(
            lambda: count(migrated_db, "SELECT count(*) FROM interval_dirty") == 0,
            what="the interval queue to empty",
        )
    publisher.close()
    assert _quarantined(migrated_db, clocked.device_id) == [
        ("implausible_time", 2, ahead.token.encode()),
        ("key_not_valid", 3, reset.token.encode()),
        ("implausible_time", 4, dated_1970.token.encode()),
    ]
    assert stored(clocked) == 1
    assert (
        count(
            migrated_db,
            "SELECT count(*) FROM interval_energy e JOIN meters m ON m.id = e.meter_id"
            " JOIN devices d ON d.id = m.device_pk WHERE d.device_id = %s"
            " AND e.slot_start NOT BETWEEN now() - interval '1 day' AND now() + interval '1 day'",
            clocked.device_id,
        )
        == 0
    )


def test_a_registered_key_is_valid_from_a_day_before_not_from_ever(migrated_db: str) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    (key,) = run_db(migrated_db, lambda conn: devices.list_keys(conn, device_id=gateway.device_id))
    assert key.valid_from is not None
    age_ms = _now() - key.valid_from.timestamp() * 1000
    assert DAY - 60_000 < age_ms < DAY + 60_000


def test_the_migration_gives_existing_keys_a_start(postgres_admin_url: str) -> None:
    before = [m for m in discover_migrations() if m.version < 30]
    with fresh_database(postgres_admin_url) as url:
        migrate(url, migrations=before)
        with psycopg.connect(url, autocommit=True) as conn:
            pk = _one(conn, "INSERT INTO devices (device_id) VALUES ('gw-old') RETURNING id")
            for kid, until in (("open", None), ("retired", "2025-05-01T00:00:00Z")):
                conn.execute(
                    "INSERT INTO device_keys (kid, device_pk, public_key, source, created_at,"
                    " valid_until) VALUES (%s, %s, %s, 'operator', '2025-06-01T12:00:00Z', %s)",
                    (kid, pk, bytes(32 - len(kid)) + kid.encode(), until),
                )
        migrate(url)
        with psycopg.connect(url) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            starts = dict(conn.execute("SELECT kid, valid_from::text FROM device_keys").fetchall())
    assert starts == {
        "open": "2025-05-31 12:00:00+00",
        "retired": "2025-04-30 23:59:59.999+00",
    }


def _one(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_times_past_what_a_float_holds_are_judged_not_raised() -> None:
    now = _now()
    for payload in (_payload(now, 10**400), _payload(10**400, now)):
        detail = implausible_time(payload, received_ms=now, window=TimeWindow())
        assert detail is not None
        assert "after" in detail
