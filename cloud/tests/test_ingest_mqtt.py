"""The ingest worker's MQTT client against the real broker: persistent session, manual
acknowledgement, redelivery of what was not acknowledged after a lost connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from cloud.tests.ingest_support import Publisher

from gridclear.cloud.ingest._mqtt import MqttSubscriber, SubscriberOptions


class _Proxy:
    """A TCP proxy in front of the broker whose connections the test can cut."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection through the proxy, as a network failure would."""
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def proxy(mqtt_url: str) -> Iterator[_Proxy]:
    host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
    p = _Proxy(host, int(port))
    yield p
    p.close()


@pytest.fixture
def publisher(mqtt_url: str, mqtt_topic_prefix: str) -> Iterator[Publisher]:
    pub = Publisher(mqtt_url, mqtt_topic_prefix)
    yield pub
    pub.close()


def test_what_was_not_acknowledged_comes_again_after_a_lost_connection(
    proxy: _Proxy, publisher: Publisher, mqtt_topic_prefix: str
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
        _wait(lambda: subscribed == [True], "the subscription")
        assert sessions == [False]
        bodies = [f"message {i}".encode() for i in range(10)]
        for body in bodies:
            publisher.publish_raw("t/x", body)
        _wait(lambda: len(received) == 10, "ten messages")
        assert [r[3] for r in received] == bodies
        assert {r[2] for r in received} == {f"{mqtt_topic_prefix}t/x"}
        first = client.generation
        client.ack(first, [r[1] for r in received[:4]])
        time.sleep(0.3)  # let the PUBACKs reach the broker before the cut

        proxy.cut()
        # Acknowledgements made while no connection is up are dropped: the next
        # connection reuses packet ids, and they would acknowledge other messages.
        _wait(lambda: len(dropped) == 1, "the lost connection")
        client.ack(first, [r[1] for r in received[4:]])
        _wait(lambda: len(subscribed) == 2, "the second subscription")
        assert sessions == [False, True], "the broker kept the session"
        _wait(lambda: len(received) == 16, "the six unacknowledged messages again")
        again = received[10:]
        assert [r[3] for r in again] == bodies[4:]
        assert {r[0] for r in again} == {client.generation} != {first}

        # Acknowledgements for the old connection are dropped, the new ones count.
        client.ack(first, [r[1] for r in again])
        client.ack(client.generation, [r[1] for r in again[:3]])
        time.sleep(0.3)
        proxy.cut()
        _wait(lambda: len(subscribed) == 3, "the third subscription")
        _wait(lambda: len(received) == 19, "the three still unacknowledged")
        assert [r[3] for r in received[16:]] == bodies[7:]
        client.ack(client.generation, [r[1] for r in received[16:]])
        time.sleep(0.3)
        assert len(received) == 19
    finally:
        client.stop()
        network.join(10)
    assert not network.is_alive()
