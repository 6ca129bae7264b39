"""A poison message waiting at the broker for a worker process that restarts.

The worker's session is persistent, so what it had not acknowledged when it stopped
is sent to it again when it reconnects. A message that once killed the worker would
kill it again after every restart; here the restarted ``gridclear-cloud ingest``
process quarantines it, stays up, and stores what came behind it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from cloud.tests.ingest_support import Gateway, Publisher, count, register, wait_for

from faults.test_ingest_faults import WorkerProcess, _until_subscribed, fault_db
from gridclear.shared._b64 import b64url_encode
from gridclear.shared.jws import sign_compact

__all__ = ["fault_db"]

BOMB = b"[" * 5000 + b"]" * 5000


def test_a_worker_restarted_with_poison_in_flight_quarantines_it_and_goes_on(
    fault_db: str, mqtt_url: str, mqtt_topic_prefix: str, server_dir: Path
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(fault_db, gateway)
    worker = WorkerProcess(
        database_url=fault_db,
        mqtt_url=mqtt_url,
        prefix=mqtt_topic_prefix,
        log=server_dir / "poison-worker.log",
    )
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    try:
        worker.start()
        _until_subscribed(publisher, gateway, fault_db)
        worker.stop()  # the session stays at the broker, which queues for it

        payload = gateway.sign().token.split(".")[1]
        publisher.send(gateway, f"{b64url_encode(BOMB)}.{payload}.AAAA")
        publisher.send(gateway, sign_compact(BOMB, gateway.key))
        gateway.seq = 1  # the good messages follow the first one
        good = [gateway.sign() for _ in range(3)]
        for message in good:
            publisher.send(gateway, message)

        worker.start()  # same client id: the poison is redelivered first
        wait_for(
            lambda: count(fault_db, "SELECT count(*) FROM raw_messages") == 4,
            timeout_s=60,
            what="the good messages behind the poison",
        )
        assert worker.process is not None
        assert worker.process.poll() is None, "the worker died"
    finally:
        worker.stop()
        publisher.close()
    with psycopg.connect(fault_db) as conn:
        reasons = sorted(
            str(r) for (r,) in conn.execute("SELECT reason FROM quarantine").fetchall()
        )
    assert reasons == ["invalid_payload", "malformed"]
    assert worker.process is not None
    assert worker.process.returncode == 0, "the worker did not stop cleanly"
