"""The benchmark's load generator sends MQTT packets it encoded itself (so that no client
library competes with the pipeline for the cores); they must be byte for byte what
paho-mqtt sends for the same packet."""

from __future__ import annotations

import socket
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_baseline import connect_packet, publish_packet


def _paho_bytes(client_id: str, topic: str, payload: bytes) -> bytes:
    """What paho (MQTT 3.1.1, clean session, keep-alive 60 s) writes to connect and
    publish ``payload`` once at QoS 1, captured by a server that answers its CONNECT."""
    server = socket.create_server(("127.0.0.1", 0))
    captured = bytearray()
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while not done.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                if not captured:
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                captured.extend(data)
                if payload in captured:
                    done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", server.getsockname()[1], keepalive=60)
    client.loop_start()
    client.publish(topic, payload, qos=1)
    assert done.wait(10), "paho sent nothing"
    client.loop_stop()
    server.close()
    return bytes(captured)


def test_the_load_generators_packets_are_pahos() -> None:
    topic = "gridclear/v1/devices/bench-gw-001/readings"
    payload = b"eyJhbGciOiJFZERTQSJ9." * 20
    paho = _paho_bytes("bench-raw-0123456789", topic, payload)
    ours = connect_packet("bench-raw-0123456789") + publish_packet(topic, payload, 1)
    assert paho == ours
