"""Helpers for the ingest tests: gateways that sign real messages, a publisher, a worker.

Everything talks to the harness's real PostgreSQL and Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from gridclear.cloud import devices
from gridclear.cloud.ingest.worker import IngestWorker, WorkerConfig
from gridclear.devtools.waiting import wait_for
from gridclear.shared.intervals import slot_start
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import ClockState, ReadingsPayload, SignedMessage, sign_readings
from gridclear.shared.readings import Reading
from gridclear.shared.topics import readings_topic, status_topic

__all__ = [
    "RECENT_MS",
    "Gateway",
    "Publisher",
    "count",
    "metric",
    "publisher",
    "register",
    "running_worker",
    "wait_for",
]


RECENT_MS = slot_start(time.time_ns() // 1_000_000) - 12 * 3600 * 1000
"""A slot boundary half a day ago: sample times that are plausible and signed by a key
registered now (keys are valid from a day before their registration)."""


def run_db(url: str, func: Callable[[Any], Any]) -> Any:
    async def main() -> Any:
        async with await AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await func(conn)

    return asyncio.run(main())


@dataclass
class Gateway:
    """A device that signs its messages in sequence, with the hash chain, like the edge."""

    device_id: str
    key: DeviceKey = field(default_factory=DeviceKey.generate)
    seq: int = 0
    prev: str | None = None
    meter: str = "m1"

    def sign(
        self, readings: list[Reading] | None = None, *, signed_ms: int | None = None
    ) -> SignedMessage:
        self.seq += 1
        now = signed_ms if signed_ms is not None else time.time_ns() // 1_000_000
        payload = ReadingsPayload(
            device_id=self.device_id,
            seq=self.seq,
            signed_ms=now,
            prev=self.prev,
            clock=ClockState(synced=True),
            readings=tuple(
                readings
                if readings is not None
                else [
                    # One sample a second from a fixed start: distinct times per message.
                    Reading(
                        meter=self.meter,
                        ts_ms=RECENT_MS + self.seq * 1000,
                        import_wh=1000 + self.seq,
                        power_w=5,
                    )
                ]
            ),
        )
        message = sign_readings(payload, self.key)
        self.prev = message.digest
        return message


def register(url: str, gateway: Gateway) -> None:
    """Create the gateway's device and register its key directly (as an operator would)."""

    async def run(conn: Any) -> None:
        await devices.create_device(conn, device_id=gateway.device_id)
        await devices.add_key(conn, device_id=gateway.device_id, public_key=gateway.key.public.x)

    run_db(url, run)


class Publisher:
    """A paho client publishing at QoS 1 and waiting for each PUBACK."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
        self.prefix = prefix
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def publish_raw(self, topic: str, body: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(self.prefix + topic, body, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def send(self, gateway: Gateway, message: SignedMessage | bytes | str) -> None:
        body = message.token if isinstance(message, SignedMessage) else message
        self.publish_raw(readings_topic(gateway.device_id), body)

    def status(self, device_id: str, body: bytes | str) -> None:
        self.publish_raw(status_topic(device_id), body, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metric(worker: IngestWorker, name: str, **labels: str) -> float:
    """The current value of one of the worker's Prometheus samples (0 when never set)."""
    value = worker.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def count(url: str, query: str, *params: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def running_worker(
    database_url: str, mqtt_url: str, prefix: str, **overrides: Any
) -> Iterator[IngestWorker]:
    """An ingest worker in a thread, subscribed before this yields, stopped afterwards."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "mqtt_url": mqtt_url,
        "client_id": f"test-ingest-{uuid.uuid4().hex[:8]}",
        "group": f"g{uuid.uuid4().hex[:8]}",
        "topic_prefix": prefix,
        "interval_refresh_s": 0.2,
    }
    values.update(overrides)
    worker = IngestWorker(WorkerConfig(**values))
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=run, name="ingest-worker", daemon=True)
    thread.start()
    try:
        assert worker.wait_connected(15), "the worker did not subscribe"
        yield worker
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive(), "the worker did not stop"
    assert not failure, failure


@pytest.fixture
def publisher(mqtt_url: str, mqtt_topic_prefix: str) -> Iterator[Publisher]:
    """A raw MQTT publisher on the test's topic prefix, closed afterwards."""
    pub = Publisher(mqtt_url, mqtt_topic_prefix)
    yield pub
    pub.close()
