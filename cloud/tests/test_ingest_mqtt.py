"""The ingest worker's MQTT client against the real broker: persistent session, manual
acknowledgement, redelivery of what was not acknowledged after a lost connection."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from cloud.tests.ingest_support import Publisher

from gridclear.cloud.ingest._mqtt import MqttSubscriber, SubscriberOptions
from gridclear.devtools.net import CuttingProxy
from gridclear.devtools.waiting import wait_for


@pytest.fixture
def proxy(mqtt_url: str) -> Iterator[CuttingProxy]:
    host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
    with CuttingProxy(host, int(port)) as p:
        yield p


@pytest.fixture
def publisher(mqtt_url: str, mqtt_topic_prefix: str) -> Iterator[Publisher]:
    pub = Publisher(mqtt_url, mqtt_topic_prefix)
    yield pub
    pub.close()


def test_what_was_not_acknowledged_comes_again_after_a_lost_connection(
    proxy: CuttingProxy, publisher: Publisher, mqtt_topic_prefix: str
) -> None:
    received: list[tuple[int, int, str, bytes]] = []
    subscribed: list[bool] = []
    sessions: list[bool] = []
    dropped: list[str] = []

    def on_message(generation: int, mid: int, qos: int, topic: str, payload: bytes) -> None:
        assert qos == 1
        received.append((generation, mid, topic, payload))

    client = MqttSubscriber(
        SubscriberOptions(
            host="127.0.0.1",
            port=proxy.port,
            client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
            filters=[f"{mqtt_topic_prefix}t/#"],
            receive_maximum=50,
            session_expiry_s=300,
            reconnect_min_s=0.5,
        ),
        on_message=on_message,
        on_connect=sessions.append,
        on_subscribe=subscribed.append,
        on_disconnect=dropped.append,
    )
    network = threading.Thread(target=client.run, daemon=True)
    network.start()
    try:
        wait_for(lambda: subscribed == [True], what="the subscription")
        assert sessions == [False]
        bodies = [f"message {i}".encode() for i in range(10)]
        for body in bodies:
            publisher.publish_raw("t/x", body)
        wait_for(lambda: len(received) == 10, what="ten messages")
        assert [r[3] for r in received] == bodies
        assert {r[2] for r in received} == {f"{mqtt_topic_prefix}t/x"}
        first = client.generation
        client.ack(first, [r[1] for r in received[:4]])
        time.sleep(0.3)  # let the PUBACKs reach the broker before the cut

        proxy.cut()
        # Acknowledgements made while no connection is up are dropped: the next
        # connection reuses packet ids, and they would acknowledge other messages.
        wait_for(lambda: len(dropped) == 1, what="the lost connection")
        client.ack(first, [r[1] for r in received[4:]])
        wait_for(lambda: len(subscribed) == 2, what="the second subscription")
        assert sessions == [False, True], "the broker kept the session"
        wait_for(lambda: len(received) == 16, what="the six unacknowledged messages again")
        again = received[10:]
        assert [r[3] for r in again] == bodies[4:]
        assert {r[0] for r in again} == {client.generation} != {first}

        # Acknowledgements for the old connection are dropped, the new ones count.
        client.ack(first, [r[1] for r in again])
        client.ack(client.generation, [r[1] for r in again[:3]])
        time.sleep(0.3)
        proxy.cut()
        wait_for(lambda: len(subscribed) == 3, what="the third subscription")
        wait_for(lambda: len(received) == 19, what="the three still unacknowledged")
        assert [r[3] for r in received[16:]] == bodies[7:]
        client.ack(client.generation, [r[1] for r in received[16:]])
        time.sleep(0.3)
        assert len(received) == 19
    finally:
        client.stop()
        network.join(10)
    assert not network.is_alive()
