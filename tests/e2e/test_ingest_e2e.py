"""The whole path: a simulated flat 2000 W meter (Modbus TCP) → ``gridclear-edge run``
(enrolled through the real API with ``gridclear-edge enrol``) → Mosquitto → an ingest
worker → PostgreSQL. Readings land once each, and interval energy is 500 Wh per
15 minutes of simulated time.

Time acceleration: the gateway stamps readings with the wall clock while the simulator's
registers run ``GRIDCLEAR_TEST_E2E_SPEED`` times faster, and the worker here computes
intervals on 15-second slots. At speed 60 (the default) a slot is 15 simulated minutes
and holds 500 Wh.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cloud.tests.api_support import fresh_database
from cloud.tests.ingest_support import count, wait_for

from gridclear.cloud.ingest.worker import IngestWorker, WorkerConfig
from gridclear.devtools.metersim import MetersimProcess
from gridclear.devtools.net import free_port

BIN = Path(sys.executable).parent
SPEED = int(os.environ.get("GRIDCLEAR_TEST_E2E_SPEED", "60"))
SLOT_MS = 15_000
EXPECTED_WH = 2000 * SLOT_MS * SPEED / 3_600_000
"""2000 W over one slot of simulated time: 500 Wh at speed 60 (15 simulated minutes)."""


@pytest.fixture
def cloud_env(postgres_admin_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    with fresh_database(postgres_admin_url) as url:
        yield {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": url,
            "GRIDCLEAR_REDIS_URL": redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"test:e2e:{uuid.uuid4().hex[:8]}:",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }


def _cloud(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "gridclear-cloud"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_a_flat_2000_w_meter_is_stored_once_and_its_interval_energy_is_exact(
    cloud_env: dict[str, str],
    metersim: Callable[..., MetersimProcess],
    mqtt_url: str,
    mqtt_topic_prefix: str,
    tmp_path: Path,
) -> None:
    database_url = cloud_env["GRIDCLEAR_DATABASE_URL"]
    _cloud(["migrate"], cloud_env)
    token = _cloud(["devices", "add", "--device-id", "gw-e2e", "--token-only"], cloud_env).strip()
    port = free_port()
    api_log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [str(BIN / "gridclear-cloud"), "serve", "--port", str(port)],
        env=cloud_env,
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    meters = metersim(meters=["1:sdm630:flat:2000"], speed=SPEED, seed=5)
    config = tmp_path / "edge.toml"
    config.write_text(
        'device_id = "gw-e2e"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        "batch_interval_s = 0.5\n\n"
        f'[mqtt]\nurl = "{mqtt_url}"\ntopic_prefix = "{mqtt_topic_prefix}"\n'
        "drain_jitter_s = 0.2\nreconnect_max_s = 1\n\n"
        f'[[meters]]\nname = "flat"\ntransport = "tcp"\nhost = "{meters.host}"\n'
        f'port = {meters.port}\nunit = 1\nmodel = "sdm630"\npoll_interval_s = 0.25\n'
    )
    worker = IngestWorker(
        WorkerConfig(
            database_url=database_url,
            mqtt_url=mqtt_url,
            client_id=f"e2e-{uuid.uuid4().hex[:8]}",
            group=f"g{uuid.uuid4().hex[:8]}",
            topic_prefix=mqtt_topic_prefix,
            interval_refresh_s=0.5,
            slot_ms=SLOT_MS,
            max_gap_ms=5_000,
        )
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    edge: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(port)
        enrolled = subprocess.run(
            [str(BIN / "gridclear-edge"), "enrol", "--url", f"http://127.0.0.1:{port}",
             "--token", token, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        assert "enrolled gw-e2e" in enrolled.stdout
        thread.start()
        assert worker.wait_connected(15)
        with (tmp_path / "edge.log").open("wb") as edge_log:
            edge = subprocess.Popen(
                [str(BIN / "gridclear-edge"), "run", "--config", str(config)],
                stdout=edge_log,
                stderr=subprocess.STDOUT,
            )

        def complete_slots() -> list[tuple[int, int]]:
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(
                    "SELECT ts_to_ms(slot_start), import_wh FROM interval_energy"
                    " WHERE complete ORDER BY slot_start"
                ).fetchall()
            return [(int(a), int(b)) for a, b in rows]

        def progress() -> str:
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(
                    "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM quarantine),"
                    " (SELECT array_agg(ARRAY[import_wh, complete::int]) FROM interval_energy),"
                    " (SELECT array_agg(reason) FROM quarantine)"
                ).fetchone()
            return f"readings, quarantined, intervals, reasons: {rows}"

        try:
            wait_for(lambda: len(complete_slots()) >= 2, timeout_s=90, what="two complete slots")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {progress()}") from None
        assert edge.send_signal(signal.SIGTERM) is None
        assert edge.wait(60) == 0
        edge = None
        # The agent sent what it held before exiting; let the worker store it.
        time.sleep(1)
        stored = count(database_url, "SELECT count(*) FROM readings")
        messages = count(database_url, "SELECT count(*) FROM raw_messages")
        wait_for(
            lambda: count(database_url, "SELECT count(*) FROM readings") == stored,
            what="the stream settled",
        )
    finally:
        stop.set()
        if edge is not None:
            edge.kill()
            edge.wait()
        api.send_signal(signal.SIGTERM)
        api.wait(30)
        api_log.close()
        thread.join(30)
    # Each reading once: as many rows as distinct samples, every message in one chain.
    assert count(database_url, "SELECT count(DISTINCT (meter_id, ts)) FROM readings") == stored
    assert count(database_url, "SELECT sum(reading_count) FROM raw_messages") == stored
    assert count(database_url, "SELECT max(seq) FROM raw_messages") == messages
    assert count(database_url, "SELECT count(*) FROM raw_messages WHERE chain <> 'ok'") == 1
    assert count(database_url, "SELECT count(*) FROM quarantine") == 0
    # The meter's registers count whole Wh at best (an SDM630 keeps kWh as a 32-bit
    # float), and interpolation rounds down: allow 2 Wh.
    for _, wh in complete_slots():
        assert abs(wh - EXPECTED_WH) <= 2, complete_slots()
