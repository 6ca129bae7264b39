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
from cloud.tests.api_support import fresh_database
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


def _relkind(conn: psycopg.Connection[tuple[object, ...]], table: str) -> str:
    row = conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (table,)).fetchone()
    assert row is not None, f"{table} does not exist"
    return str(row[0])


@pytest.mark.storage_paths
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
            jobs = {
                (str(proc), str(table))
                for proc, table in conn.execute(
                    "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
                ).fetchall()
            }
            assert {
                ("policy_compression", "readings"),
                ("policy_compression", "raw_messages"),
                ("policy_retention", "readings"),
                ("policy_retention", "raw_messages"),
            } <= jobs
            assert _relkind(conn, "interval_energy") == "v"  # the aggregate's (0060)
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


def test_compression_and_retention_on_timescaledb_keep_the_energy_and_drop_old_samples(
    timescale_admin_url: str,
) -> None:
    """Compressed chunks still give the same interval energy and take late samples;
    the retention policy drops samples older than two years."""
    day = 24 * 3600 * 1000
    t0 = RECENT_MS - 10 * day  # older than the compression policy's 7 days
    with fresh_database(timescale_admin_url) as url:
        migrate(url, storage="timescaledb")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO devices (device_id) VALUES ('gw-old')")
            conn.execute("INSERT INTO meters (device_pk, name) SELECT id, 'm1' FROM devices")

            def store(ts: int, wh: int) -> None:
                conn.execute(
                    "INSERT INTO readings (meter_id, ts, import_wh, device_pk, seq)"
                    " SELECT m.id, ms_to_ts(%s), %s, m.device_pk, 1 FROM meters m"
                    " ON CONFLICT DO NOTHING",
                    (ts, wh),
                )

            for minute in range(0, 61, 5):
                if minute != 30:  # kept back: it arrives late, after compression
                    store(t0 + minute * 60_000, 1000 + minute * 10)

            def energy() -> list[tuple[int, int, bool]]:
                rows = conn.execute(
                    "SELECT ts_to_ms(slot_start), import_wh, complete FROM interval_energy"
                    " ORDER BY slot_start"
                ).fetchall()
                return [(int(a) - t0, int(b), bool(c)) for a, b, c in rows]

            before = energy()
            assert before == [
                (0, 150, True),
                (900_000, 150, False),
                (1_800_000, 150, False),  # minute 30 interpolated over 10 minutes
                (2_700_000, 150, True),
            ]

            def run(proc: str) -> None:
                (job,) = conn.execute(
                    "SELECT job_id FROM timescaledb_information.jobs"
                    " WHERE proc_name = %s AND hypertable_name = 'readings'",
                    (proc,),
                ).fetchone() or (None,)
                assert job is not None
                conn.execute("CALL run_job(%s)", (job,))

            run("policy_compression")
            compressed = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'readings' AND is_compressed"
            ).fetchone()
            assert compressed is not None
            assert compressed[0] >= 1
            assert energy() == before
            store(t0 + 30 * 60_000, 1300)  # the late sample, into a compressed chunk
            store(t0 + 30 * 60_000, 1300)  # and again: stored once
            conn.execute(
                "CALL refresh_continuous_aggregate('readings_15m', ms_to_ts(%s), ms_to_ts(%s))",
                (t0, t0 + 3_600_000),
            )
            assert energy() == [(s, 150, True) for s in range(0, 3_600_000, 900_000)]
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert stored == (13,)

            store(RECENT_MS - 3 * 365 * day, 5)
            run("policy_retention")
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert stored == (13,)
