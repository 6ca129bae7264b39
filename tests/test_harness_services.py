"""The test harness talks to real servers: one round trip through each proves it."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiomqtt
import psycopg
import redis

from gridclear.devtools.mqtt import MqttCollector
from gridclear.devtools.waiting import until

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


async def _publish_qos1(url: str, topic: str, payloads: list[bytes]) -> None:
    """Publish each payload at QoS 1; returns once the broker has acknowledged every one."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with aiomqtt.Client(parts.hostname, parts.port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def test_mqtt_publish_subscribe_qos1(mqtt_url: str, mqtt_topic_prefix: str) -> None:
    topic = f"{mqtt_topic_prefix}gridclear/v1/devices/gw-1/readings"
    async with MqttCollector.from_url(mqtt_url, [topic]).running() as subscriber:
        await _publish_qos1(mqtt_url, topic, [b"one", b"two", b"three"])
        await until(lambda: len(subscriber.received) >= 3, what="three messages")
    assert subscriber.payloads(topic) == [b"one", b"two", b"three"]


async def test_broker_queues_every_qos1_message_for_an_absent_subscriber(
    mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    """Production's broker policy is in force: nothing is dropped past 1000 queued."""
    topic = f"{mqtt_topic_prefix}queued"
    worker = MqttCollector.from_url(mqtt_url, [topic])
    async with worker.running():
        pass
    # The worker is away (its persistent session stays); readings keep coming.
    payloads = [str(i).encode() for i in range(QUEUED_WHILE_AWAY)]
    await _publish_qos1(mqtt_url, topic, payloads)

    back = MqttCollector.from_url(mqtt_url, [topic])
    back.identifier = worker.identifier
    async with back.running():
        await until(lambda: len(back.received) >= QUEUED_WHILE_AWAY, timeout_s=60, what="the queue")
    assert len(back.received) == QUEUED_WHILE_AWAY
    assert sorted(back.payloads(topic), key=int) == payloads
