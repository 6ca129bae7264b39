"""The publisher against a real Mosquitto: QoS 1, a bounded window, PUBACK before delete,
the retained status, and nothing lost when the broker goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt
import pytest

from gridclear.devtools.localservices import MosquittoServer
from gridclear.devtools.mqtt import MqttCollector
from gridclear.devtools.net import free_port
from gridclear.devtools.waiting import until
from gridclear.edge.clock import fixed_clock
from gridclear.edge.outbox import Outbox
from gridclear.edge.publisher import Publisher, PublisherSettings
from gridclear.edge.signing import Signer
from gridclear.edge.status import status_message
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import StatusMessage, verify_readings
from gridclear.shared.readings import Reading
from gridclear.shared.topics import readings_topic, status_topic

KEY = DeviceKey(bytes(range(2, 34)))
T0 = 1_767_225_600_000


class Collector(MqttCollector):
    """The shared collector, reading what it received as the cloud would."""

    def seqs(self, topic: str) -> list[int]:
        return [
            verify_readings(p, key=KEY.public, expected_device_id=_device(t)).payload.seq
            for t, p, _ in self.received
            if t == topic
        ]

    def statuses(self, topic: str) -> list[StatusMessage]:
        return [StatusMessage.model_validate_json(p) for t, p, _ in self.received if t == topic]


def _device(topic: str) -> str:
    return topic.split("/")[-2]


@pytest.fixture
def broker(local_mosquitto: MosquittoServer) -> Iterator[MosquittoServer]:
    """The session's broker, which a test may stop; it is running again afterwards."""
    yield local_mosquitto
    local_mosquitto.start()


@dataclass
class Rig:
    outbox: Outbox
    publisher: Publisher
    collector: Collector
    device_id: str
    stop: asyncio.Event

    @property
    def readings_topic(self) -> str:
        return readings_topic(self.device_id)

    @property
    def status_topic(self) -> str:
        return status_topic(self.device_id)

    def append(self, count: int, start: int = 0) -> None:
        for i in range(start, start + count):
            self.outbox.append([Reading(meter="m1", ts_ms=T0 + i * 1000, import_wh=i)])
        self.publisher.notify()


@contextlib.asynccontextmanager
async def _rig(
    url: str, tmp_path: Path, *, wait_connected: bool = True, **overrides: object
) -> AsyncIterator[Rig]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    device_id = f"gw-{uuid.uuid4().hex[:8]}"
    signer = Signer(device_id=device_id, key=KEY, clock=fixed_clock(synced=True))
    settings = PublisherSettings(
        device_id=device_id,
        host=parts.hostname,
        port=parts.port,
        drain_jitter_s=0.0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
        **overrides,  # type: ignore[arg-type]
    )
    with Outbox.open(tmp_path / "outbox.db", signer=signer) as outbox:
        publisher = Publisher(
            settings,
            outbox,
            status=lambda state: status_message(
                state, device_id=device_id, kid=KEY.kid, outbox=outbox
            ),
        )
        collector = Collector(
            parts.hostname,
            parts.port,
            [readings_topic(device_id), status_topic(device_id)],
        )
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            collecting = group.create_task(collector.run())
            await until(collector.subscribed.is_set)
            publishing = group.create_task(publisher.run(stop))
            if wait_connected:
                await until(lambda: publisher.stats.connected)
            try:
                yield Rig(outbox, publisher, collector, device_id, stop)
            finally:
                stop.set()
                async with asyncio.timeout(30):
                    await publishing
                collecting.cancel()


async def test_messages_arrive_in_order_and_leave_the_outbox_only_when_acknowledged(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    async with _rig(broker.url, tmp_path) as rig:
        rig.append(50)
        await until(lambda: rig.outbox.stats().depth == 0)
        assert rig.collector.seqs(rig.readings_topic) == list(range(1, 51))
        assert rig.publisher.stats.acked == 50
        await until(lambda: rig.collector.statuses(rig.status_topic))
        online = rig.collector.statuses(rig.status_topic)[0]
        assert (online.state, online.kid, online.device_id) == ("online", KEY.kid, rig.device_id)
    # A clean stop leaves the retained status "offline".
    await until(lambda: rig.collector.statuses(rig.status_topic)[-1].state == "offline")
    retained = await _retained(broker, rig.status_topic)
    assert StatusMessage.model_validate_json(retained).state == "offline"


async def _retained(broker: MosquittoServer, topic: str) -> bytes:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no retained message")


async def test_the_in_flight_window_is_never_exceeded(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    async with _rig(broker.url, tmp_path, max_inflight=4, drain_rate=10_000.0) as rig:
        rig.append(300)
        await until(lambda: rig.outbox.stats().depth == 0)
        assert sorted(rig.collector.seqs(rig.readings_topic)) == list(range(1, 301))
        assert 1 <= rig.publisher.stats.max_inflight_seen <= 4


async def test_backlog_drains_oldest_first_while_live_messages_flow(
    broker: MosquittoServer, tmp_path: Path
) -> None:
    # 300 messages kept during an outage, drained at 100/s; live ones meanwhile.
    async with _rig(broker.url, tmp_path, max_inflight=8, drain_rate=100.0) as rig:
        broker.stop()
        await until(lambda: not rig.publisher.stats.connected)
        rig.append(300)
        broker.start()
        await until(lambda: rig.publisher.stats.connects >= 2)
        await until(lambda: rig.publisher.stats.drain_backlog > 0, timeout_s=10)
        rig.append(5, start=1000)
        await until(lambda: rig.outbox.stats().depth == 0)
    seqs = rig.collector.seqs(rig.readings_topic)
    assert sorted(set(seqs)) == list(range(1, 306))
    backlog = [s for s in seqs if s <= 300]
    live = [s for s in seqs if s > 300]
    assert backlog == sorted(backlog)
    # The live messages did not wait for the end of the backlog.
    assert seqs.index(live[0]) < seqs.index(300)


async def test_broker_outage_loses_nothing(broker: MosquittoServer, tmp_path: Path) -> None:
    async with _rig(broker.url, tmp_path) as rig:
        rig.append(20)
        await until(lambda: rig.outbox.stats().depth == 0)
        broker.stop()
        await until(lambda: not rig.publisher.stats.connected)
        rig.append(100, start=20)  # taken while the broker is away
        assert rig.outbox.stats().depth == 100
        broker.start()
        await until(lambda: rig.outbox.stats().depth == 0)
        rig.append(10, start=120)
        await until(lambda: rig.outbox.stats().depth == 0)
        await until(lambda: set(rig.collector.seqs(rig.readings_topic)) >= set(range(1, 131)))
    seqs = rig.collector.seqs(rig.readings_topic)
    assert sorted(set(seqs)) == list(range(1, 131))
    outage = [s for s in seqs if 21 <= s <= 120]
    assert sorted(set(outage)) == outage  # the kept ones arrive oldest first


async def test_without_a_broker_everything_stays_and_stop_is_prompt(tmp_path: Path) -> None:
    signer = Signer(device_id="gw-1", key=KEY, clock=fixed_clock(synced=True))
    settings = PublisherSettings(
        device_id="gw-1",
        host="127.0.0.1",
        port=free_port(),
        reconnect_min_s=0.01,
        reconnect_max_s=0.05,
    )
    with Outbox.open(tmp_path / "outbox.db", signer=signer) as outbox:
        publisher = Publisher(
            settings,
            outbox,
            status=lambda state: status_message(
                state, device_id="gw-1", kid=KEY.kid, outbox=outbox
            ),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        outbox.append([Reading(meter="m1", ts_ms=T0, import_wh=1)])
        publisher.notify()
        await until(lambda: publisher.stats.last_error is not None)
        stop.set()
        async with asyncio.timeout(5):
            await task
        assert publisher.stats.connects == 0
        assert outbox.stats().depth == 1
