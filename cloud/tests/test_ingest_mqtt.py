"""The ingest worker's MQTT source (paho-mqtt) against the real broker: persistent
session, acknowledgement after commit, redelivery after a lost connection, Receive
Maximum, the CONNACK's Server Keep Alive, malformed and oversized packets."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud.tests.ingest_support import (
    Gateway,
    Publisher,
    count,
    register,
    running_worker,
    wait_for,
)

from gridclear.cloud.ingest.source import Delivery, MqttSource, MqttSourceOptions
from gridclear.devtools.localservices import MosquittoServer
from gridclear.devtools.net import CuttingProxy
from gridclear.shared.protocol import MAX_MESSAGE_BYTES

BROKER_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "conf.d"


class _Source:
    """An :class:`MqttSource` that records what it delivers, connections and drops."""

    def __init__(self, port: int, prefix: str, **options: object) -> None:
        self.received: list[Delivery] = []
        self.sessions: list[bool] = []
        self.dropped: list[str] = []
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "client_id": f"gridclear-cloud:test-{uuid.uuid4().hex[:8]}",
            "filters": [f"{prefix}t/#"],
            "session_expiry_s": 300,
        }
        values.update(options)
        self.source = MqttSource(
            MqttSourceOptions(**values),  # type: ignore[arg-type]
            on_connect=self.sessions.append,
            on_disconnect=self.dropped.append,
        )
        self.source.start(self.received.append)
        assert self.source.wait_ready(15), "the source did not subscribe"

    def close(self, *, end_session: bool = True) -> None:
        self.source.close(end_session=end_session)


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def proxy(mqtt_url: str) -> Iterator[CuttingProxy]:
    p = CuttingProxy(*_host_port(mqtt_url))
    yield p
    p.close()


def _publish(publisher: Publisher, bodies: list[bytes]) -> None:
    for body in bodies:
        publisher.publish_raw("t/x", body)


def test_what_was_not_acknowledged_comes_again_after_a_cut_and_old_acks_are_dropped(
    proxy: CuttingProxy, publisher: Publisher, mqtt_topic_prefix: str
) -> None:
    s = _Source(proxy.port, mqtt_topic_prefix)
    try:
        assert s.sessions == [False]
        bodies = [f"message {i}".encode() for i in range(10)]
        _publish(publisher, bodies)
        wait_for(lambda: len(s.received) == 10, what="ten messages")
        assert [d.payload for d in s.received] == bodies
        assert {d.topic for d in s.received} == {f"{mqtt_topic_prefix}t/x"}
        assert {d.qos for d in s.received} == {1}
        first = s.source.connection
        assert s.source.acknowledge(s.received[:4]) == 4
        # The PUBACKs are through once the broker answered a later packet (the SUBACK).
        publisher.client.subscribe("barrier/none", qos=1)
        wait_for(lambda: proxy.from_client.count(b"\x40\x02") >= 4, what="the four PUBACKs")

        proxy.cut()
        wait_for(lambda: len(s.dropped) == 1, what="the lost connection")
        # While no connection is up, acknowledgements are dropped: the next connection
        # numbers its packets afresh, and they would acknowledge other messages.
        assert s.source.acknowledge(s.received[4:]) == 0
        wait_for(lambda: len(s.sessions) == 2, what="the second connection")
        assert s.sessions == [False, True], "the broker kept the session"
        wait_for(lambda: len(s.received) == 16, what="the six unacknowledged messages again")
        again = s.received[10:]
        assert [d.payload for d in again] == bodies[4:]
        assert {d.connection for d in again} == {s.source.connection} != {first}

        # Acknowledgements meant for the old connection are dropped, the new ones count.
        assert s.source.wait_ready(15)
        sent = proxy.from_client.count(b"\x40\x02")
        assert s.source.acknowledge(s.received[4:10]) == 0
        assert s.source.acknowledge(again[:3]) == 3
        wait_for(lambda: proxy.from_client.count(b"\x40\x02") >= sent + 3, what="3 PUBACKs")
        proxy.cut()
        wait_for(lambda: len(s.sessions) == 3, what="the third connection")
        wait_for(lambda: len(s.received) >= 19, what="the three still unacknowledged")
        assert [d.payload for d in s.received[16:]] == bodies[7:]
        assert s.source.acknowledge(s.received[16:]) == 3
    finally:
        s.close()


def test_the_broker_sends_no_more_than_receive_maximum_unacknowledged(
    mqtt_url: str, publisher: Publisher, mqtt_topic_prefix: str
) -> None:
    s = _Source(_host_port(mqtt_url)[1], mqtt_topic_prefix, receive_maximum=5)
    try:
        bodies = [f"m{i}".encode() for i in range(20)]
        _publish(publisher, bodies)  # each PUBACKed: all twenty are at the broker
        wait_for(lambda: len(s.received) == 5, what="the first five")
        # Leaving waits for the UNSUBACK: whatever the broker sent before it has arrived.
        assert s.source.leave(timeout_s=15)
        assert len(s.received) == 5, "the broker held the rest back"
        # What the broker had assigned still comes once acknowledged, leaving or not.
        while len(s.received) < 20:
            held = len(s.received)
            s.source.acknowledge(s.received)
            wait_for(lambda n=held: len(s.received) > n, what="more after acknowledging")
        assert [d.payload for d in s.received] == bodies
        s.source.acknowledge(s.received)
    finally:
        s.close()


@pytest.fixture
def strict_broker(server_dir: Path) -> Iterator[MosquittoServer]:
    """A broker with production's policy and ``max_keepalive 10``, as a cluster may set."""
    policy = server_dir / "policy"
    shutil.copytree(BROKER_POLICY, policy)
    (policy / "zz-keepalive.conf").write_text("max_keepalive 10\n")
    broker = MosquittoServer(run_dir=server_dir, policy_dir=policy)
    broker.start()
    yield broker
    broker.stop()


def test_the_brokers_server_keep_alive_replaces_the_one_asked_for(
    strict_broker: MosquittoServer,
) -> None:
    proxy = CuttingProxy("127.0.0.1", strict_broker.port)
    s = _Source(proxy.port, "ka/", keepalive_s=600)
    try:
        assert s.source.keepalive_s == 10
        # With 600 s no PINGREQ would go out for minutes; with the broker's 10 s it does.
        wait_for(lambda: b"\xc0\x00" in proxy.from_client, timeout_s=40, what="a PINGREQ")
        assert s.dropped == []
    finally:
        s.close()
        proxy.close()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x00", id="reserved-packet-type"),
        pytest.param(b"\x32\x04\xff\xff\x00\x01", id="topic-longer-than-packet"),
        pytest.param(b"\x32\x08\x00\x01t\x00\x01\xff\xff\xff", id="broken-properties"),
        pytest.param(b"\x32\xff\xff\xff\xff\xff", id="length-over-4-bytes"),
        pytest.param(b"\x36\x06\x00\x01t\x00\x01\x00", id="qos-3"),
    ],
)
def test_a_malformed_packet_drops_the_connection_and_nothing_is_lost(
    garbage: bytes, proxy: CuttingProxy, publisher: Publisher, mqtt_topic_prefix: str
) -> None:
    s = _Source(proxy.port, mqtt_topic_prefix)
    try:
        _publish(publisher, [b"before"])
        wait_for(lambda: len(s.received) == 1, what="the first message")
        proxy.inject(garbage)
        wait_for(lambda: len(s.dropped) == 1, what="the connection dropped")
        wait_for(lambda: len(s.sessions) == 2, what="the connection back")
        wait_for(lambda: len(s.received) == 2, what="the unacknowledged message again")
        _publish(publisher, [b"after"])
        wait_for(lambda: len(s.received) == 3, what="the next message")
        assert [d.payload for d in s.received] == [b"before", b"before", b"after"]
    finally:
        s.close()


def test_a_message_over_the_workers_maximum_packet_size_is_never_sent_to_it(
    mqtt_url: str, publisher: Publisher, mqtt_topic_prefix: str
) -> None:
    s = _Source(_host_port(mqtt_url)[1], mqtt_topic_prefix, maximum_packet_size=4096)
    try:
        _publish(publisher, [b"x" * 5000, b"small"])
        wait_for(lambda: len(s.received) == 1, what="the small message")
        assert [d.payload for d in s.received] == [b"small"]
        assert s.dropped == []
    finally:
        s.close()


def test_an_oversized_message_is_quarantined_and_the_worker_goes_on(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, publisher: Publisher
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(migrated_db, gateway)
    with running_worker(migrated_db, mqtt_url, mqtt_topic_prefix):
        publisher.send(gateway, b"x" * (MAX_MESSAGE_BYTES + 1))
        publisher.send(gateway, gateway.sign())
        wait_for(
            lambda: count(migrated_db, "SELECT count(*) FROM raw_messages") == 1,
            what="the message after the oversized one",
        )
        assert count(migrated_db, "SELECT count(*) FROM quarantine WHERE reason = 'too_large'") == 1
