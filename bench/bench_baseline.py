"""Machine baselines: raw broker, database, Redis and Ed25519 rates, for ratios.

Every other figure in gridclear is best read against what the bare parts do on
the same machine in the same run: the broker path at QoS 1, PostgreSQL round
trips and binary COPY, Redis round trips, and PyNaCl's single-core Ed25519
verification rate.

The broker path is measured two ways. ``mqtt_qos1_rate``: a paho publisher, Mosquitto
and a paho subscriber, each keeping its own QoS 1 window. ``raw_qos1_rate``: the load
generator the ingest benchmark uses (:func:`publish_packets`: pre-encoded PUBLISH
packets written straight to sockets, PUBACKs counted, next to no CPU of its own),
Mosquitto and a paho subscriber that does nothing with what it receives; so the
ingest figure and its baseline differ only in what receives the messages.

The load generator is the one place in gridclear where MQTT packets are built by hand
(:func:`connect_packet`, :func:`publish_packet`): encoding them beforehand keeps a
client library's CPU out of the measurement. tests/test_bench_load_generator.py checks
them byte for byte against paho-mqtt's encoding of the same packets.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Sequence

import paho.mqtt.client as mqtt
import psycopg
import redis
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import BenchContext, Figure

WINDOW = 1000
"""QoS 1 messages a publisher keeps unacknowledged (both publishers below)."""
PAYLOAD = b"x" * 300
"""About one signed message with a single reading."""


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


def _client(url: str, client_id: str) -> mqtt.Client:
    host, port = _host_port(url)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(0)  # 0: paho does not limit; a publisher's semaphore does
    client.connect(host, port, keepalive=30)
    return client


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 1, ready for the wire (load generator only)."""
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _varint(len(body)) + body


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s (load generator only)."""
    body = _string("MQTT") + b"\x04\x02" + struct.pack("!H", 60) + _string(client_id)
    return b"\x10" + _varint(len(body)) + body


_PUBACK = 0x40


class _Stream:
    """One connection of :func:`publish_packets`: its packets, how many are sent and acked."""

    def __init__(self, host: str, port: int, packets: Sequence[bytes]) -> None:
        self.packets = packets
        self.sent = 0
        self.acked = 0
        self.pending = b""
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(f"bench-raw-{uuid.uuid4().hex[:10]}"))
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise RuntimeError("the broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"the broker refused the connection: {connack!r}")

    def fill(self, window: int) -> None:
        end = min(len(self.packets), self.acked + window)
        if end > self.sent:
            self.sock.sendall(b"".join(self.packets[self.sent : end]))
            self.sent = end

    def read_acks(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError(f"the broker closed the connection after {self.acked} PUBACKs")
        data = self.pending + data
        whole = len(data) - len(data) % 4
        # A PUBACK of MQTT 3.1.1 is always 4 bytes: 0x40 0x02 and the packet id.
        if data[0:whole:4].count(_PUBACK) != whole // 4:
            raise RuntimeError("the broker answered something other than PUBACK")
        self.acked += whole // 4
        self.pending = data[whole:]


def publish_packets(url: str, streams: Sequence[Sequence[bytes]], *, window: int) -> None:
    """Send each list of pre-encoded QoS 1 PUBLISH packets on its own connection.

    Each connection keeps ``window`` packets unacknowledged; returns when the broker
    has acknowledged every packet. The packet ids of one list must be unique within
    any ``window`` consecutive packets. Costs little CPU: sendall of joined packets,
    and PUBACKs counted, not parsed one by one.
    """
    host, port = _host_port(url)
    active = [_Stream(host, port, packets) for packets in streams if packets]
    with selectors.DefaultSelector() as selector:
        for stream in active:
            selector.register(stream.sock, selectors.EVENT_READ, stream)
            stream.fill(window)
        left = len(active)
        while left:
            for key, _ in selector.select(timeout=30):
                stream = key.data
                stream.read_acks()
                if stream.acked == len(stream.packets):
                    selector.unregister(stream.sock)
                    stream.sock.sendall(b"\xe0\x00")  # DISCONNECT
                    stream.sock.close()
                    left -= 1
                else:
                    stream.fill(window)


class _Counter:
    """A paho subscriber that counts what it receives (QoS 1, acknowledged by paho)."""

    def __init__(self, url: str, topic: str, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.done = threading.Event()
        subscribed = threading.Event()
        self.client = _client(url, f"bench-sub-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the subscriber was not subscribed within 10 s")

    def _on_message(self, *_: object) -> None:
        self.received += 1
        if self.received == self.expected:
            self.done.set()

    def wait(self) -> None:
        finished = self.done.wait(120)
        self.client.disconnect()
        self.client.loop_stop()
        if not finished:
            raise RuntimeError(f"only {self.received} of {self.expected} messages arrived")


def mqtt_qos1_rate(url: str, messages: int) -> float:
    """Messages/s from a paho publisher at QoS 1 to a paho subscriber at QoS 1.

    The publisher keeps its window with a semaphore released on each PUBACK, not with
    paho's ``max_inflight_messages``: past that limit paho queues the message and, on
    every PUBACK, rescans every message in flight to find the next one to send (this
    benchmark measured 7,200 msg/s that way, 8,000 to 12,700 with the semaphore). What
    limits it then is the paho publisher's own CPU: the same subscriber takes over
    30,000 msg/s from :func:`raw_qos1_rate`'s generator on the same machine.
    """
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    counter = _Counter(url, topic, messages)
    publisher = _client(url, f"bench-pub-{uuid.uuid4().hex[:6]}")
    window = threading.BoundedSemaphore(WINDOW)
    publisher.on_publish = lambda *_: window.release()
    publisher.loop_start()
    started = time.perf_counter()
    for _ in range(messages):
        window.acquire()
        publisher.publish(topic, PAYLOAD, qos=1)
    counter.wait()
    elapsed = time.perf_counter() - started
    publisher.disconnect()
    publisher.loop_stop()
    return messages / elapsed


def raw_qos1_rate(url: str, messages: int) -> float:
    """Messages/s from :func:`publish_packets` (one connection) to a paho subscriber, QoS 1."""
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    counter = _Counter(url, topic, messages)
    packets = [publish_packet(topic, PAYLOAD, i % 65535 + 1) for i in range(messages)]
    started = time.perf_counter()
    publish_packets(url, [packets], window=WINDOW)
    counter.wait()
    return messages / (time.perf_counter() - started)


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
    raw_rate = raw_qos1_rate(ctx.mqtt_url, messages)
    pg_trips, pg_copy = postgres_rates(ctx.database_url, copy_rows)
    return [
        Figure("mqtt_qos1_paho_to_paho", mqtt_rate, "msg/s", f"{messages} x 300 B"),
        Figure("mqtt_qos1_raw_to_paho", raw_rate, "msg/s", f"{messages} x 300 B"),
        Figure("postgres_select1", pg_trips, "round trips/s", "one connection"),
        Figure("postgres_binary_copy", pg_copy, "rows/s", f"{copy_rows} rows, 4 integer columns"),
        Figure("redis_ping", redis_round_trips(ctx.redis_url, 20_000 // scale), "round trips/s"),
        Figure("ed25519_verify", ed25519_verify_rate(20_000 // scale), "verifies/s", "PyNaCl"),
    ]
