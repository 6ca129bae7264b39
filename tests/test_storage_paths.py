"""The schema takes the path its database is given, and ingest works the same on either.

Each test runs on both storage paths (``storage_paths``): on plain PostgreSQL readings and
raw messages are ordinary tables; on TimescaleDB (a throwaway server with it preloaded, or
``GRIDCLEAR_TEST_TIMESCALE_URL``) they are hypertables with compression and retention
policies and the continuous aggregate. Either way a signed message goes through a real
worker into the tables and is read back with the same query.
"""

from __future__ import annotations

import psycopg
import pytest
from cloud.tests.ingest_support import (
    RECENT_MS,
    Gateway,
    Publisher,
    count,
    register,
    running_worker,
    wait_for,
)

from gridclear.cloud.storage.migrations import migrate
from gridclear.shared.readings import Reading


pytestmark = pytest.mark.storage_paths


def _relkind(conn: psycopg.Connection[tuple[object, ...]], table: str) -> str:
    row = conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (table,)).fetchone()
    assert row is not None, f"{table} does not exist"
    return str(row[0])


def test_schema_path_and_ingest_on_this_server(
    database_url: str, storage_path: str, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    url = database_url
    migrate(url)
    migrate(url)  # safe to run twice on either path
    with psycopg.connect(url) as conn:
        extension = conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if storage_path == "timescaledb":
            assert extension == (1,)
            hypertables = {
                name
                for (name,) in conn.execute(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables"
                ).fetchall()
            }
            assert hypertables >= {"readings", "raw_messages"}
            compressed = conn.execute(
                "SELECT count(*) FROM timescaledb_information.compression_settings"
                " WHERE hypertable_name IN ('readings', 'raw_messages')"
            ).fetchone()
            assert compressed is not None
            assert compressed[0] > 0
            aggregates = conn.execute(
                "SELECT count(*) FROM timescaledb_information.continuous_aggregates"
            ).fetchone()
            assert aggregates is not None
            assert aggregates[0] >= 1
        else:
            assert extension == (0,)
            assert _relkind(conn, "readings") == "r"
            assert _relkind(conn, "raw_messages") == "r"
            assert _relkind(conn, "interval_energy") == "r"

    gateway = Gateway(device_id="gw-paths")
    register(url, gateway)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    try:
        with running_worker(url, mqtt_url, mqtt_topic_prefix):
            for i in range(5):
                reading = Reading(meter="m1", ts_ms=RECENT_MS + i * 60_000, import_wh=1000 + i * 33)
                publisher.send(gateway, gateway.sign([reading]))
            wait_for(
                lambda: count(url, "SELECT count(*) FROM readings") == 5,
                what="5 readings stored",
            )
    finally:
        publisher.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.import_wh FROM readings r JOIN meters m ON m.id = r.meter_id"
            " WHERE m.name = 'm1' ORDER BY r.ts"
        ).fetchall()
    assert [wh for (wh,) in rows] == [1000, 1033, 1066, 1099, 1132]
