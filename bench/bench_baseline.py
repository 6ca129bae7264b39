"""Machine baselines: raw broker, database, Redis and Ed25519 rates, for ratios.

Every other figure in gridclear is best read against what the bare parts do on
the same machine in the same run: the broker path paho → Mosquitto → paho at
QoS 1, PostgreSQL round trips and binary COPY, Redis round trips, and PyNaCl's
single-core Ed25519 verification rate.
"""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
import redis
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import BenchContext, Figure


def _client(url: str, client_id: str) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    # Keep paho's own queue bounded well below its 65,535 in-flight limit.
    client.max_inflight_messages_set(1000)
    client.connect(host, int(port), keepalive=30)
    return client


def mqtt_qos1_rate(url: str, messages: int) -> float:
    """Messages/s published at QoS 1 and received by a QoS 1 subscriber."""
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    received = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received == messages:
            done.set()

    subscriber = _client(url, f"bench-sub-{uuid.uuid4().hex[:6]}")
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.loop_start()
    subscriber.subscribe(topic, qos=1)
    subscribed.wait(10)
    publisher = _client(url, f"bench-pub-{uuid.uuid4().hex[:6]}")
    publisher.loop_start()
    payload = b"x" * 300  # about one signed message with a single reading
    started = time.perf_counter()
    for _ in range(messages):
        publisher.publish(topic, payload, qos=1)
    finished = done.wait(120)
    elapsed = time.perf_counter() - started
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    if not finished:
        raise RuntimeError(f"only {received} of {messages} messages arrived")
    return messages / elapsed


def postgres_rates(url: str, rows: int) -> tuple[float, float]:
    """(SELECT 1 round trips/s, binary COPY rows/s into an unlogged table)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        trips = 2000
        for _ in range(trips):
            conn.execute("SELECT 1")
        round_trips = trips / (time.perf_counter() - started)
        conn.execute(
            "CREATE TEMP TABLE bench_copy"
            " (meter int, ts bigint, import_wh bigint, export_wh bigint)"
        )
        data = [(i % 500, i, i * 3, i * 2) for i in range(rows)]
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int4", "int8", "int8", "int8"])
            for row in data:
                copy.write_row(row)
        copy_rate = rows / (time.perf_counter() - started)
    return round_trips, copy_rate


def redis_round_trips(url: str, trips: int) -> float:
    client = redis.Redis.from_url(url)
    try:
        started = time.perf_counter()
        for _ in range(trips):
            client.ping()
        return trips / (time.perf_counter() - started)
    finally:
        client.close()


def ed25519_verify_rate(count: int) -> float:
    key = SigningKey.generate()
    verify_key = key.verify_key
    signed = [key.sign(f"payload {i}".encode() * 8) for i in range(count)]
    started = time.perf_counter()
    for message in signed:
        verify_key.verify(message)
    return count / (time.perf_counter() - started)


def run(ctx: BenchContext) -> list[Figure]:
    scale = 10 if ctx.quick else 1
    messages = 20_000 // scale
    copy_rows = 500_000 // scale
    mqtt_rate = mqtt_qos1_rate(ctx.mqtt_url, messages)
    pg_trips, pg_copy = postgres_rates(ctx.database_url, copy_rows)
    return [
        Figure("mqtt_qos1_paho_to_paho", mqtt_rate, "msg/s", f"{messages} x 300 B, one core each"),
        Figure("postgres_select1", pg_trips, "round trips/s", "one connection"),
        Figure("postgres_binary_copy", pg_copy, "rows/s", f"{copy_rows} rows, 4 integer columns"),
        Figure("redis_ping", redis_round_trips(ctx.redis_url, 20_000 // scale), "round trips/s"),
        Figure("ed25519_verify", ed25519_verify_rate(20_000 // scale), "verifies/s", "PyNaCl"),
    ]
