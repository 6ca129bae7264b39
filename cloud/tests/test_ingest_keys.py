"""A key row the worker cannot read costs at most that key, never the worker.

A revocation dated 9999-12-31T23:59:59-14:00 (the year 10000 in UTC) was stored by
the API, and every worker then died loading keys (``DataError: timestamp too
large``), again after each restart. The rows are written here with SQL, as a bug or
a hand edit would leave them.
"""

from __future__ import annotations

import logging
import uuid

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

from gridclear.cloud.ingest.keys import KeyCache, load_keys
from gridclear.cloud.ingest.metrics import IngestMetrics


def _stored(url: str, gateway: Gateway) -> int:
    return count(
        url,
        "SELECT count(*) FROM raw_messages r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s",
        gateway.device_id,
    )


def _set(url: str, gateway: Gateway, column: str, value: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE device_keys SET {column} = %s::timestamptz WHERE kid = %s",
            (value, gateway.key.public.kid),
        )


def test_a_revocation_in_the_year_10000_is_read_and_ingest_goes_on(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    odd = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    other = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, odd)
    register(migrated_db, other)
    _set(migrated_db, odd, "revoked_at", "9999-12-31T23:59:59-14:00")
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(other, other.sign())
        # Revoked from a time no message is signed at: its messages still count.
        publisher.send(odd, odd.sign())
        wait_for(lambda: _stored(migrated_db, other) == 1, what="the other gateway's message")
        wait_for(lambda: _stored(migrated_db, odd) == 1, what="the message of the odd key")
    publisher.close()


def test_infinite_bounds_are_read_as_beyond_every_time(migrated_db: str) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    _set(migrated_db, gateway, "valid_until", "infinity")
    _set(migrated_db, gateway, "revoked_at", "infinity")
    with psycopg.connect(migrated_db) as conn:
        key = load_keys(conn)[gateway.key.public.kid]
    assert key.valid_until_ms is not None
    assert key.valid_until_ms > 2**62
    assert key.revoked_ms is not None
    assert key.revoked_ms > 2**62


def test_a_key_row_that_cannot_be_read_is_left_out_counted_and_logged(
    mqtt_url: str,
    mqtt_topic_prefix: str,
    migrated_db: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    broken = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, good)
    register(migrated_db, broken)
    # A row no code path writes: a public key of 31 bytes (the check that refuses it is
    # dropped in this module's database only).
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE device_keys DROP CONSTRAINT device_keys_public_key_check")
        conn.execute(
            "UPDATE device_keys SET public_key = substr(public_key, 2) WHERE kid = %s",
            (broken.key.public.kid,),
        )
    metrics = IngestMetrics()
    with psycopg.connect(migrated_db) as conn, caplog.at_level(logging.ERROR):
        keys = KeyCache(metrics=metrics).refresh(conn)
    assert good.key.public.kid in keys
    assert broken.key.public.kid not in keys
    assert metrics.registry.get_sample_value("gridclear_ingest_keys_unreadable") == 1
    assert broken.key.public.kid in caplog.text

    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix) as worker:
        publisher.send(broken, broken.sign())
        publisher.send(good, good.sign())
        wait_for(lambda: _stored(migrated_db, good) == 1, what="the good gateway's message")
        wait_for(
            lambda: metric(worker, "gridclear_ingest_quarantined_total", reason="unknown_key") == 1,
            what="the broken key's message in quarantine",
        )
        assert metric(worker, "gridclear_ingest_keys_unreadable") == 1
    publisher.close()
