"""The test harness talks to real servers: one round trip through each proves it."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import psycopg
import redis
from paho.mqtt.enums import CallbackAPIVersion

# More than Mosquitto's default max_queued_messages (1000): with the default
# configuration a persistent subscriber that was away would silently lose some.
QUEUED_WHILE_AWAY = 1500


def test_postgres_table_round_trip(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE harness (id int PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO harness VALUES (1, 'kWh'), (2, 'Wh')")
        rows = conn.execute("SELECT id, note FROM harness ORDER BY id").fetchall()
    assert rows == [(1, "kWh"), (2, "Wh")]


def test_each_module_gets_a_fresh_database(database_url: str, postgres_admin_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_name <> 'harness'"
        ).fetchone()
    assert name is not None
    assert name[0].startswith("t_")
    assert tables == (0,)


def test_redis_round_trip(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{redis_prefix}nonce", "abc", ex=60)
        assert client.get(f"{redis_prefix}nonce") == b"abc"
        assert 0 < client.ttl(f"{redis_prefix}nonce") <= 60
    finally:
        client.close()


class _Collector:
    """A paho client that records what it receives on one topic filter."""

    def __init__(self, url: str, *, client_id: str, clean: bool) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.host, self.port = host, int(port)
        self.received: list[bytes] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
        )
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.received.append(msg.payload)

    def __enter__(self) -> _Collector:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK from the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10), "no SUBACK from the broker"


def _publish_qos1(url: str, topic: str, payloads: list[bytes]) -> None:
    with _Collector(url, client_id=f"pub-{uuid.uuid4().hex[:8]}", clean=True) as publisher:
        infos = [publisher.client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "the broker did not acknowledge a QoS 1 message"


def test_mqtt_publish_subscribe_qos1(mqtt_url: str, mqtt_topic_prefix: str) -> None:
    topic = f"{mqtt_topic_prefix}gridclear/v1/devices/gw-1/readings"
    done = threading.Event()
    with _Collector(mqtt_url, client_id=f"sub-{uuid.uuid4().hex[:8]}", clean=True) as sub:
        sub.client.on_message = lambda _c, _u, msg: (
            sub.received.append(msg.payload),
            len(sub.received) == 3 and done.set(),
        )
        sub.subscribe(topic)
        _publish_qos1(mqtt_url, topic, [b"one", b"two", b"three"])
        assert done.wait(20), f"received only {sub.received}"
    assert sub.received == [b"one", b"two", b"three"]


def test_broker_queues_every_qos1_message_for_an_absent_subscriber(
    mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    """Production's broker policy is in force: nothing is dropped past 1000 queued."""
    topic = f"{mqtt_topic_prefix}queued"
    client_id = f"worker-{uuid.uuid4().hex[:8]}"
    with _Collector(mqtt_url, client_id=client_id, clean=False) as worker:
        worker.subscribe(topic)
    # The worker is away (its persistent session stays); readings keep coming.
    payloads = [str(i).encode() for i in range(QUEUED_WHILE_AWAY)]
    _publish_qos1(mqtt_url, topic, payloads)

    done = threading.Event()
    with _Collector(mqtt_url, client_id=client_id, clean=False) as worker:
        worker.client.on_message = lambda _c, _u, msg: (
            worker.received.append(msg.payload),
            len(worker.received) >= QUEUED_WHILE_AWAY and done.set(),
        )
        done.wait(60)
    assert len(worker.received) == QUEUED_WHILE_AWAY
    assert sorted(worker.received, key=int) == payloads
