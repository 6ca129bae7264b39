"""Ingest under faults, with the worker as a real process: killed with SIGKILL mid-stream,
and the database stopped and started again under it. Nothing published is lost, nothing is
stored twice.

The database outage lasts ``GRIDCLEAR_TEST_OUTAGE_S`` seconds (3 by default, enough to
prove the point in the default suite; set 30 for the full drill).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cloud.tests.ingest_support import (
    RECENT_MS,
    Gateway,
    Publisher,
    count,
    register,
    wait_for,
)
from psycopg import sql

from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.children import spawn_child
from gridclear.devtools.localservices import PostgresServer
from gridclear.shared.readings import Reading

OUTAGE_S = float(os.environ.get("GRIDCLEAR_TEST_OUTAGE_S", "3"))
CLI = str(Path(sys.executable).parent / "gridclear-cloud")


class WorkerProcess:
    """``gridclear-cloud ingest`` as a child process with a fixed client id."""

    def __init__(self, *, database_url: str, mqtt_url: str, prefix: str, log: Path) -> None:
        self.argv = [
            CLI,
            "ingest",
            "--database-url", database_url,
            "--mqtt-url", mqtt_url,
            "--client-id", f"gridclear-cloud:fault-{uuid.uuid4().hex[:8]}",
            "--group", f"g{uuid.uuid4().hex[:8]}",
            "--topic-prefix", prefix,
            "--interval-refresh-s", "0",
        ]  # fmt: skip
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn_child(self.argv, log_path=self.log, cwd=self.log.parent)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture
def fault_db(local_postgres: PostgresServer) -> Iterator[str]:
    """A migrated database on the local server, which these tests stop and start."""
    name = f"t_fault_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(local_postgres.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(local_postgres.url, dbname=name)
    migrate(url)
    yield url
    local_postgres.start()
    with psycopg.connect(local_postgres.url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _stream(publisher: Publisher, gateway: Gateway, total: int, done: threading.Event) -> None:
    """Publish ``total`` messages, paced, each with 2 readings, as a gateway would."""
    for i in range(total):
        ts = RECENT_MS + i * 2000
        readings = [
            Reading(meter="a", ts_ms=ts, import_wh=i),
            Reading(meter="b", ts_ms=ts, import_wh=2 * i),
        ]
        publisher.send(gateway, gateway.sign(readings, signed_ms=ts))
        if i % 50 == 49:
            time.sleep(0.02)
    done.set()


def _until_subscribed(publisher: Publisher, gateway: Gateway, url: str) -> None:
    """Send the gateway's first message until it is stored: then the worker is subscribed.

    Copies sent before that are redeliveries to the worker (skipped as duplicates) or
    went to no subscriber at all.
    """
    first = gateway.sign()
    deadline = time.monotonic() + 30
    while _stored(url) != 1:
        assert time.monotonic() < deadline, "the worker did not subscribe"
        publisher.send(gateway, first)
        time.sleep(0.2)


def _stored(url: str) -> int:
    try:
        return count(url, "SELECT count(*) FROM readings")
    except psycopg.OperationalError:
        return -1


@dataclass
class Rig:
    """A registered gateway, an ingest worker process and a publisher, for one fault test."""

    gateway: Gateway
    worker: WorkerProcess
    publisher: Publisher
    log: Path


@pytest.fixture
def rig(fault_db: str, mqtt_url: str, mqtt_topic_prefix: str, server_dir: Path) -> Iterator[Rig]:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(fault_db, gateway)
    log = server_dir / "worker.log"
    worker = WorkerProcess(
        database_url=fault_db, mqtt_url=mqtt_url, prefix=mqtt_topic_prefix, log=log
    )
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    try:
        yield Rig(gateway=gateway, worker=worker, publisher=publisher, log=log)
    finally:
        worker.stop()
        publisher.close()


def _check_exactly_once(url: str, streamed: int) -> None:
    """The first message (one reading) and ``streamed`` messages of two readings, once each."""
    assert count(url, "SELECT count(*) FROM raw_messages") == 1 + streamed
    assert count(url, "SELECT count(*) FROM readings") == 1 + 2 * streamed
    assert count(url, "SELECT count(DISTINCT (meter_id, ts)) FROM readings") == 1 + 2 * streamed
    assert count(url, "SELECT count(*) FROM quarantine") == 0
    # Every message arrived and the chain has no hole.
    assert count(url, "SELECT count(*) FROM raw_messages WHERE chain NOT IN ('first', 'ok')") == 0


def test_a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    fault_db: str, rig: Rig
) -> None:
    total = 2000
    done = threading.Event()
    rig.worker.start()
    _until_subscribed(rig.publisher, rig.gateway, fault_db)
    thread = threading.Thread(target=_stream, args=(rig.publisher, rig.gateway, total, done))
    thread.start()
    wait_for(lambda: _stored(fault_db) > 400, what="the stream under way")
    rig.worker.kill()
    killed_at = _stored(fault_db)
    rig.worker.start()  # same client id: the broker resumes its session
    thread.join(120)
    assert done.is_set()
    wait_for(lambda: _stored(fault_db) == 1 + 2 * total, timeout_s=120, what="every reading")
    assert killed_at < 1 + 2 * total, "the kill came after the stream, not during it"
    _check_exactly_once(fault_db, total)


def test_a_database_outage_holds_messages_at_the_broker_and_loses_none(
    fault_db: str, local_postgres: PostgresServer, rig: Rig
) -> None:
    total = 1500
    done = threading.Event()
    rig.worker.start()
    _until_subscribed(rig.publisher, rig.gateway, fault_db)
    thread = threading.Thread(target=_stream, args=(rig.publisher, rig.gateway, total, done))
    thread.start()
    wait_for(lambda: _stored(fault_db) > 200, what="the stream under way")
    local_postgres.stop()
    time.sleep(OUTAGE_S)  # the outage itself: gateways keep publishing meanwhile
    local_postgres.start()
    thread.join(120)
    wait_for(lambda: _stored(fault_db) == 1 + 2 * total, timeout_s=120, what="every reading")
    assert rig.worker.process is not None
    assert rig.worker.process.poll() is None, "the worker died"
    _check_exactly_once(fault_db, total)
    assert "database unavailable" in rig.log.read_text()
