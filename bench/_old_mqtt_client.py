"""The COMPARISON BASELINE of ``script/bench ingest``: not part of the product.

Until the ingest worker received through paho-mqtt (gridclear.cloud.ingest.source),
it used this home-made MQTT 5 subscriber. It stays here, under bench/ only, so that
the benchmark can measure the library's cost against it in the same run
(:class:`OldClientSource` adapts it to the worker's ``IngestSource``). It hand-slices
packets and ignores the CONNACK's properties: do not use it anywhere else.

Original notes follow.

A minimal MQTT 5 subscriber: persistent session, manual PUBACK.

Why not paho-mqtt: the worker needs only a small part of MQTT (connect with a
persistent session, subscribe at QoS 1, receive, acknowledge after commit, keep
alive, reconnect), and on that path paho took 39 % of the time a worker held the GIL
with one reading per message (docs/INGEST.md, section 7): it reads every packet
with three or more ``recv`` calls, builds a
``Properties`` object and a message object for each, matches the topic against its
callback table, and sends each PUBACK on its own. Here a read takes whatever the
socket has (many packets), a PUBLISH is parsed with a few slices, and the
acknowledgements of a batch go out in one write.

What it does, and nothing more:

- CONNECT with ``clean_start=false``, a Session Expiry Interval and a Receive Maximum
  (so the broker keeps what was not acknowledged while the worker is away, and sends
  it at most ``receive_maximum`` unacknowledged messages), optional user name,
  password and TLS;
- SUBSCRIBE to its filters at QoS 1 after every CONNACK;
- PUBLISH (QoS 0 and 1) handed to ``on_message`` with the connection's generation,
  which :meth:`MqttSubscriber.ack` needs: a message can only be acknowledged on the
  connection it arrived on (after a reconnect the broker sends it again);
- PINGREQ when nothing was sent for half the keep-alive; the connection counts as
  lost when nothing arrived for one and a half keep-alives;
- on any error, reconnect with backoff (1 s doubling to 30 s).

All socket I/O happens on the thread that runs :meth:`MqttSubscriber.run` (a TLS
socket must not be read and written from two threads at once); :meth:`ack` queues
the PUBACKs and wakes that thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gridclear.cloud.ingest.source import Delivery

__all__ = ["MqttProtocolError", "MqttSubscriber", "OldClientSource", "SubscriberOptions"]

log = logging.getLogger(__name__)

_CONNACK = 0x20
_PUBLISH = 0x30
_SUBACK = 0x90
_DISCONNECT = 0xE0
_PINGREQ = b"\xc0\x00"
_DISCONNECT_NORMAL = b"\xe0\x00"
_PROP_SESSION_EXPIRY = 0x11
_PROP_RECEIVE_MAXIMUM = 0x21
_MAX_PACKET = 16 * 1024 * 1024
"""Refuse anything bigger (the broker's own limit is far below)."""


class MqttProtocolError(Exception):
    """The broker sent something this client cannot accept; the connection is dropped."""


@dataclass(frozen=True)
class SubscriberOptions:
    host: str
    port: int
    client_id: str
    filters: Sequence[str]
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 1000
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0


MessageHandler = Callable[[int, int, int, str, bytes], None]
"""``(generation, packet_id, qos, topic, payload)``, on the network thread; must not block."""


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


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(options: SubscriberOptions) -> bytes:
    """CONNECT, MQTT 5, clean start off (the session persists)."""
    flags = 0
    payload = _string(options.client_id)
    if options.username is not None:
        flags |= 0x80
        payload += _string(options.username)
    if options.password is not None:
        flags |= 0x40
        payload += _string(options.password)
    properties = struct.pack(
        "!BIBH",
        _PROP_SESSION_EXPIRY,
        options.session_expiry_s,
        _PROP_RECEIVE_MAXIMUM,
        options.receive_maximum,
    )
    variable = (
        _string("MQTT")
        + bytes([5, flags])
        + struct.pack("!H", options.keepalive_s)
        + _varint(len(properties))
        + properties
    )
    return _packet(0x10, variable + payload)


def subscribe_packet(packet_id: int, filters: Sequence[str]) -> bytes:
    """SUBSCRIBE at QoS 1 (no local, retain handling: defaults), no properties."""
    body = struct.pack("!H", packet_id) + b"\x00"
    for topic_filter in filters:
        body += _string(topic_filter) + b"\x01"
    return _packet(0x82, body)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs, success (MQTT 5 lets the reason code be left out then)."""
    return b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in packet_ids)


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        while sock.recv(4096):
            pass


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when ``data`` ends first."""
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise MqttProtocolError("a variable byte integer longer than 4 bytes")


class MqttSubscriber:
    """One persistent MQTT 5 session; :meth:`run` is its network loop (blocks until stop)."""

    def __init__(
        self,
        options: SubscriberOptions,
        *,
        on_message: MessageHandler,
        on_connect: Callable[[bool], None] | None = None,
        on_subscribe: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_subscribe = on_subscribe
        self._on_disconnect = on_disconnect
        self._generation = 0
        self._live: int | None = None
        """The generation of the connection that is up, None between connections."""
        self._lock = threading.Lock()
        self._acks: list[int] = []
        """Packet ids to acknowledge on the live connection; emptied when it drops."""
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stop = threading.Event()
        self._last_sent = 0.0
        self._reached = False
        """Whether the current connection attempt got as far as a CONNACK."""

    @property
    def generation(self) -> int:
        """Counts successful connections; a message carries the one it arrived on."""
        return self._generation

    def ack(self, generation: int, packet_ids: Sequence[int]) -> None:
        """Acknowledge these QoS 1 messages, if their connection is still the current one.

        Any thread. Acknowledgements for an earlier connection are dropped: the broker
        sends those messages again on the new one.
        """
        if not packet_ids:
            return
        with self._lock:
            # Not after the connection dropped either: the next one reuses packet ids.
            if generation != self._live:
                return
            self._acks.extend(packet_ids)
        self._wake()

    def stop(self) -> None:
        """Ask :meth:`run` to send DISCONNECT and return."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return
        # OSError: already woken (its buffer is full), or run() has just ended.
        with contextlib.suppress(OSError):
            wake.send(b"\x00")

    # ------------------------------------------------------------ network thread

    def run(self) -> None:
        """Connect, receive and acknowledge until :meth:`stop`; reconnects on any failure."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self._run()
        finally:
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = None
            wake_r.close()
            wake_w.close()

    def _run(self) -> None:
        delay = self.options.reconnect_min_s
        while not self._stop.is_set():
            try:
                sock = self._open()
            except (OSError, MqttProtocolError) as error:
                o = self.options
                log.warning("mqtt: cannot connect to %s:%s: %s", o.host, o.port, error)
                self._stop.wait(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            try:
                self._serve(sock)
                reason = "stopped"
            except (OSError, MqttProtocolError) as error:
                reason = str(error) or type(error).__name__
            except Exception as error:
                # A bug here or in a callback must not end the network thread for good:
                # log it, drop the connection (nothing unacknowledged is lost) and go on.
                log.exception("mqtt: unexpected error; reconnecting")
                reason = repr(error)
            finally:
                self._drop(sock)
            if self._on_disconnect is not None:
                self._on_disconnect(reason)
            if self._stop.is_set():
                break
            if self._reached:
                delay = self.options.reconnect_min_s
            self._stop.wait(delay)
            delay = min(delay * 2, self.options.reconnect_max_s)

    def _open(self) -> socket.socket:
        self._reached = False
        o = self.options
        sock = socket.create_connection((o.host, o.port), timeout=o.connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.tls is not None:
                sock = o.tls.wrap_socket(sock, server_hostname=o.host)
            sock.sendall(connect_packet(o))
        except BaseException:
            sock.close()
            raise
        return sock

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._live = None
            self._acks.clear()
        with contextlib.suppress(OSError):
            sock.close()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        self._last_sent = time.monotonic()

    def _serve(self, sock: socket.socket) -> None:
        wake = self._wake_r
        assert wake is not None
        buffer = b""
        connected = False
        now = time.monotonic()
        self._last_sent = now
        last_received = now
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ, "sock")
            selector.register(wake, selectors.EVENT_READ, "wake")
            while True:
                if self._stop.is_set():
                    if connected:
                        self._flush_acks(sock)
                        self._send(sock, _DISCONNECT_NORMAL)
                    return
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                events = [] if pending else selector.select(timeout=1.0)
                readable = pending or any(key.data == "sock" for key, _ in events)
                if any(key.data == "wake" for key, _ in events):
                    _drain(wake)
                if readable:
                    chunk = sock.recv(262144)
                    if not chunk:
                        raise ConnectionResetError("the broker closed the connection")
                    last_received = time.monotonic()
                    buffer, connected = self._handle(sock, buffer + chunk, connected)
                if connected:
                    self._flush_acks(sock)
                self._keep_alive(sock, connected, last_received)

    def _keep_alive(self, sock: socket.socket, connected: bool, last_received: float) -> None:
        """PINGREQ when due; TimeoutError when the broker went quiet for too long."""
        now = time.monotonic()
        if not connected and now - last_received > self.options.connect_timeout_s:
            raise TimeoutError("no CONNACK from the broker")
        keepalive = self.options.keepalive_s
        if keepalive > 0:
            if now - last_received > keepalive * 1.5:
                raise TimeoutError("the broker stopped answering (keep-alive)")
            if now - self._last_sent >= keepalive / 2:
                self._send(sock, _PINGREQ)

    def _flush_acks(self, sock: socket.socket) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        if acks:
            self._send(sock, puback_packets(acks))

    def _handle(self, sock: socket.socket, buffer: bytes, connected: bool) -> tuple[bytes, bool]:
        """Handle every whole packet in ``buffer``: (what is left of it, whether connected)."""
        pos = 0
        end = len(buffer)
        on_message = self._on_message
        generation = self._generation
        while pos < end:
            first = buffer[pos]
            length = _read_varint(buffer, pos + 1)
            if length is None:
                break
            size, start = length
            if size > _MAX_PACKET:
                raise MqttProtocolError(f"a packet of {size} bytes")
            stop = start + size
            if stop > end:
                break
            if first & 0xF0 == _PUBLISH and connected:
                # Topic (2-byte length), packet id (QoS 1), properties (skipped), payload.
                qos = (first >> 1) & 3
                at = start + 2 + (buffer[start] << 8 | buffer[start + 1])
                if at > stop:
                    raise MqttProtocolError("a malformed PUBLISH")
                # A broker passes on only UTF-8 topics; anything else reaches the worker
                # (and its quarantine as bad_topic) rather than breaking the connection.
                topic = buffer[start + 2 : at].decode(errors="replace")
                packet_id = 0
                if qos == 1:
                    packet_id = buffer[at] << 8 | buffer[at + 1]
                    at += 2
                elif qos:
                    raise MqttProtocolError("a QoS 2 PUBLISH on a QoS 1 subscription")
                properties = _read_varint(buffer, at)
                if properties is None or properties[0] + properties[1] > stop:
                    raise MqttProtocolError("a malformed PUBLISH")
                payload = buffer[properties[0] + properties[1] : stop]
                on_message(generation, packet_id, qos, topic, payload)
            else:
                connected = self._control(sock, first & 0xF0, buffer[start:stop], connected)
                generation = self._generation
            pos = stop
        return buffer[pos:], connected

    def _control(self, sock: socket.socket, kind: int, body: bytes, connected: bool) -> bool:
        """Handle a packet other than PUBLISH; whether connected afterwards."""
        if kind == _CONNACK and not connected:
            if len(body) < 2 or body[1] != 0:
                code = body[1] if len(body) >= 2 else -1
                raise MqttProtocolError(f"the broker refused the connection (reason {code})")
            with self._lock:
                self._generation += 1
                self._live = self._generation
            self._reached = True
            if self._on_connect is not None:
                self._on_connect(bool(body[0] & 1))
            self._send(sock, subscribe_packet(1, self.options.filters))
            return True
        if not connected:
            raise MqttProtocolError(f"packet type {kind >> 4} before CONNACK")
        if kind == _SUBACK:
            properties = _read_varint(body, 2)
            codes = body[properties[0] + properties[1] :] if properties is not None else b""
            ok = bool(codes) and all(code < 0x80 for code in codes)
            if not ok:
                log.error("mqtt: the broker refused the subscriptions: %s", codes.hex())
            if self._on_subscribe is not None:
                self._on_subscribe(ok)
        elif kind == _DISCONNECT:
            code = body[0] if body else 0
            raise ConnectionResetError(f"the broker disconnected (reason {code:#04x})")
        # Anything else (PINGRESP, an AUTH, a PUBREL we never caused) needs nothing.
        return True


class OldClientSource:
    """:class:`~gridclear.cloud.ingest.source.IngestSource` over :class:`MqttSubscriber`,
    for the benchmark's comparison only (it cannot leave a group: it never unsubscribes)."""

    def __init__(self, options: SubscriberOptions) -> None:
        self._ready = threading.Event()
        self._options = options
        self._client: MqttSubscriber | None = None
        self._thread: threading.Thread | None = None

    def start(self, deliver: Callable[[Delivery], None]) -> None:
        def on_message(generation: int, mid: int, qos: int, topic: str, payload: bytes) -> None:
            deliver(Delivery(topic, payload, generation, mid, qos))

        def on_subscribe(ok: bool) -> None:
            if ok:
                log.info("mqtt: subscribed to %s", ", ".join(self._options.filters))
                self._ready.set()

        self._client = MqttSubscriber(
            self._options, on_message=on_message, on_subscribe=on_subscribe
        )
        self._thread = threading.Thread(target=self._client.run, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def acknowledge(self, deliveries: Sequence[Delivery]) -> int:
        assert self._client is not None
        generation = self._client.generation
        mids = [d.mid for d in deliveries if d.qos == 1 and d.connection == generation]
        self._client.ack(generation, mids)
        return len(mids)

    def leave(self, timeout_s: float) -> bool:
        return False

    def close(self, *, end_session: bool) -> None:
        if self._client is not None and self._thread is not None:
            self._client.stop()
            self._thread.join(10)
