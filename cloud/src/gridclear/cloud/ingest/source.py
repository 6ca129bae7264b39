"""Where the ingest worker's messages come from: the :class:`IngestSource` contract and
its MQTT implementation on paho-mqtt.

The contract is what the worker relies on, and all it relies on:

- :meth:`IngestSource.start` begins delivering messages, each as a :class:`Delivery`,
  to a callback on the source's own thread; the callback must not block.
- :meth:`IngestSource.acknowledge` tells the source that deliveries are committed; the
  source may then forget them. A delivery never acknowledged comes again (at least
  once), possibly to another worker of the group.
- :meth:`IngestSource.leave` stops new messages from being assigned to this worker;
  what was already assigned keeps coming, so the worker can commit and acknowledge it.
- :meth:`IngestSource.close` ends; with ``end_session`` nothing is kept for this worker
  any more (call it only once everything delivered is acknowledged), without it what
  is unacknowledged waits for the same worker's return.

:class:`MqttSource` is that contract over MQTT 5 with paho-mqtt 2 (``manual_ack=True``):

- a persistent session (``clean_start=False``, a Session Expiry Interval), so the
  broker keeps what was not acknowledged while the worker is away;
- a PUBACK only from :meth:`MqttSource.acknowledge`, after the commit. paho reuses
  packet ids after a reconnect, so each delivery carries the number of the connection
  it arrived on and an acknowledgement for any other connection is dropped (the broker
  sends that message again on the new one);
- backpressure by Receive Maximum: the broker sends at most ``receive_maximum``
  unacknowledged messages, so a slow database holds the rest at the broker;
- the CONNACK's properties honoured: Server Keep Alive replaces the keep-alive asked
  for (paho does this; :attr:`MqttSource.keepalive_s` reports it), the broker's Receive
  Maximum bounds the QoS 1 messages this client sends (at most its one presence
  message, below), and its Maximum Packet Size is checked against the largest packet
  this client sends (a SUBSCRIBE);
- the client's own Maximum Packet Size announced, above the broker's own limit, so a
  compliant broker never sends more than the worker reads; malformed packets end the
  connection (paho answers them with a protocol error) and the session brings back
  whatever was unacknowledged;
- reconnection with exponential back-off (paho's, ``reconnect_min_s`` to
  ``reconnect_max_s``), resubscribing after each CONNACK;
- group presence: a retained message per member on
  ``<prefix>gridclear/v1/cloud/ingest/<group>/members/<client id>``, ``present`` while
  connected, ``absent`` (its Will) when it vanished without leaving, removed when it
  left. Every member reads them, so a member that is away while the broker queues its
  share of the readings is seen (``on_absent``).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gridclear.shared.topics import PREFIX

__all__ = [
    "INVALID_TOPIC",
    "PRESENCE_ABSENT",
    "PRESENCE_PRESENT",
    "Delivery",
    "IngestSource",
    "MqttSource",
    "MqttSourceOptions",
    "presence_root",
]

log = logging.getLogger(__name__)

PRESENCE_PRESENT = b"present"
PRESENCE_ABSENT = b"absent"
INVALID_TOPIC = "(a topic that is not UTF-8)"
"""What a delivery's topic is when the broker passed on one that is not UTF-8 (the
worker quarantines it as ``bad_topic``)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the source delivered it. Acknowledge it with the same object."""

    topic: str
    payload: bytes
    connection: int
    """Which connection of the source it arrived on; its acknowledgement is valid only there."""
    mid: int
    """The packet id (0 at QoS 0)."""
    qos: int


class IngestSource(Protocol):
    """Messages in, acknowledgements after commit (module docstring: the contract)."""

    def start(self, deliver: Callable[[Delivery], None]) -> None:
        """Begin delivering to ``deliver``, on the source's thread; returns at once."""
        ...

    def wait_ready(self, timeout_s: float) -> bool:
        """True once messages can flow (connected and subscribed)."""
        ...

    def acknowledge(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge committed deliveries, any thread; how many were still acknowledgeable."""
        ...

    def leave(self, timeout_s: float) -> bool:
        """Take no new messages; those assigned already keep coming. True once confirmed."""
        ...

    def close(self, *, end_session: bool) -> None:
        """Stop delivering and disconnect; ``end_session``: keep nothing for this worker."""
        ...


@dataclass(frozen=True)
class MqttSourceOptions:
    """How :class:`MqttSource` connects. ``filters`` are subscribed at QoS 1."""

    host: str
    port: int
    client_id: str
    filters: Sequence[str]
    leave_filters: Sequence[str] = ()
    """The filters :meth:`MqttSource.leave` unsubscribes (the shared ones); default: all."""
    presence_root: str | None = None
    """Where the group's presence messages live (:func:`presence_root`); None: no presence."""
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 1000
    maximum_packet_size: int = 2 * 1024 * 1024
    """Announced to the broker: it sends nothing bigger. Keep it above the broker's own
    ``max_packet_size`` (1 MiB in deploy/mosquitto): a bigger message is dropped for this
    client by the broker, not refused to its publisher."""
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30


def presence_root(topic_prefix: str, group: str) -> str:
    """The topic under which the members of ``group`` announce themselves."""
    return f"{topic_prefix}{PREFIX.rsplit('/', 1)[0]}/cloud/ingest/{quote(group, safe='')}/members"


def _member_topic(root: str, client_id: str) -> str:
    return f"{root}/{quote(client_id, safe=':@-._~')}"


class MqttSource:
    """:class:`IngestSource` over one persistent MQTT 5 session (module docstring)."""

    def __init__(
        self,
        options: MqttSourceOptions,
        *,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_absent: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        """``on_absent``: called on paho's thread with the members away without having
        left, whenever the group's presence changes."""
        self.options = options
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._on_absent = on_absent
        self._deliver: Callable[[Delivery], None] | None = None
        self._lock = threading.Lock()
        self._connection = 0
        self._live: int | None = None
        """The connection that is up, None between connections."""
        self._subscribed = threading.Event()
        self._presence_known = threading.Event()
        self._presence_mid: int | None = None
        self._left = threading.Event()
        self._leaving = False
        self._members: dict[str, bool] = {}
        """Presence of the group's members by client id: True present, False absent."""
        self.keepalive_s = options.keepalive_s
        """The keep-alive in use: the broker's Server Keep Alive when it set one."""
        self.broker_maximum_packet_size: int | None = None
        self.broker_receive_maximum: int | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------ set-up

    def _make_client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        # A failing callback is logged by paho instead of ending its network thread.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger("gridclear.cloud.ingest.mqtt"))
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls is not None:
            client.tls_set_context(o.tls)
        client.reconnect_delay_set(o.reconnect_min_s, o.reconnect_max_s)
        if o.presence_root is not None:
            client.will_set(
                _member_topic(o.presence_root, o.client_id), PRESENCE_ABSENT, qos=1, retain=True
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        return client

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.options.session_expiry_s
        properties.ReceiveMaximum = self.options.receive_maximum
        properties.MaximumPacketSize = self.options.maximum_packet_size
        return properties

    # ------------------------------------------------------------ the contract

    def start(self, deliver: Callable[[Delivery], None]) -> None:
        """Connect in the background (paho's thread) and deliver to ``deliver`` from there."""
        self._deliver = deliver
        o = self.options
        self._client.connect_async(
            o.host,
            o.port,
            keepalive=o.keepalive_s,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self._client.loop_start()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def wait_presence(self, timeout_s: float) -> bool:
        """True once the group's presence has been subscribed to on this connection."""
        return self._presence_known.wait(timeout_s)

    def members_present(self) -> frozenset[str]:
        """The other members of the group that are connected, as far as presence says."""
        return frozenset(c for c, here in list(self._members.items()) if here)

    @property
    def connection(self) -> int | None:
        """The number of the connection that is up (None between connections)."""
        return self._live

    def acknowledge(self, deliveries: Sequence[Delivery]) -> int:
        """PUBACK the QoS 1 deliveries of the live connection; drop the others.

        A delivery of an earlier connection is not acknowledged: paho numbers the
        packets of a new connection afresh, so its packet id may now name another
        message; the broker sends it again on the new connection instead. The lock is
        held while paho queues the PUBACKs, and a reconnect first waits for it (in
        :meth:`_on_disconnect`) and then empties paho's queue, so no PUBACK queued for
        one connection is sent on the next.
        """
        sent = 0
        with self._lock:
            live = self._live
            if live is None:
                return 0
            for delivery in deliveries:
                if delivery.qos == 1 and delivery.connection == live:
                    self._client.ack(delivery.mid, 1)
                    sent += 1
        return sent

    def leave(self, timeout_s: float) -> bool:
        """Unsubscribe from ``leave_filters`` and wait for the broker to confirm it.

        The broker assigns this worker no new message from a shared subscription after
        that; the ones it assigned already (sent or queued for this session) still come,
        one for each acknowledgement.
        """
        with self._lock:
            self._leaving = True
            if self._live is not None:
                self._unsubscribe()
        # Not connected yet: _on_connect unsubscribes once the session is resumed.
        return self._left.wait(timeout_s)

    def _unsubscribe(self) -> None:
        # The UNSUBACK can arrive before unsubscribe() returns its packet id, and this
        # client unsubscribes only to leave: any UNSUBACK confirms it.
        self._client.unsubscribe(list(self.options.leave_filters or self.options.filters))

    def close(self, *, end_session: bool) -> None:
        """Disconnect and stop paho's thread.

        With ``end_session`` the DISCONNECT sets the Session Expiry Interval to 0, so the
        broker forgets the session and keeps nothing for this client id, and the
        member's presence is removed; otherwise the session and the ``present`` message
        stay, and the broker queues for the worker until it returns.
        """
        client = self._client
        if self._live is not None:
            if end_session and self.options.presence_root is not None:
                topic = _member_topic(self.options.presence_root, self.options.client_id)
                client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            if end_session:
                properties.SessionExpiryInterval = 0
            client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"),
                properties=properties,
            )
        client.loop_stop()

    # ------------------------------------------------------------ paho's thread

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt: the broker refused the connection: %s", reason)
            if self._on_disconnect_cb is not None:
                self._on_disconnect_cb(f"refused: {reason}")
            return
        self._honour(properties)
        with self._lock:
            self._connection += 1
            self._live = self._connection
        if self._on_connect_cb is not None:
            self._on_connect_cb(flags.session_present)
        if self._leaving:
            # (Re)connected while leaving: a resumed session still has its subscriptions;
            # drop them, then collect what is queued and take nothing new.
            self._unsubscribe()
            return
        client.subscribe([(f, 1) for f in self.options.filters])
        if self.options.presence_root is not None:
            # On paho's thread: its SUBACK is handled after this assignment.
            self._presence_mid = client.subscribe(f"{self.options.presence_root}/+", qos=0)[1]

    def _honour(self, properties: Properties | None) -> None:
        """Note what the CONNACK's properties demand (paho applies Server Keep Alive)."""
        keepalive = getattr(properties, "ServerKeepAlive", None)
        if keepalive is not None and keepalive != self.options.keepalive_s:
            log.info("mqtt: the broker set the keep-alive to %s s", keepalive)
        self.keepalive_s = self._client.keepalive
        self.broker_receive_maximum = getattr(properties, "ReceiveMaximum", None)
        self.broker_maximum_packet_size = getattr(properties, "MaximumPacketSize", None)
        limit = self.broker_maximum_packet_size
        # The largest packet this client sends: the SUBSCRIBE of every filter.
        largest = 16 + sum(len(f.encode()) + 3 for f in self.options.filters)
        if limit is not None and largest > limit:
            log.error(
                "mqtt: the broker accepts packets of at most %d bytes; subscribing needs %d",
                limit,
                largest,
            )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if mid == self._presence_mid:
            # The broker sends the retained presence messages right after this SUBACK.
            self._presence_known.set()
            return
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt: the broker refused the subscriptions: %s", ", ".join(refused))
            return
        log.info("mqtt: subscribed to %s", ", ".join(self.options.filters))
        if self.options.presence_root is not None:
            topic = _member_topic(self.options.presence_root, self.options.client_id)
            self._client.publish(topic, PRESENCE_PRESENT, qos=1, retain=True)
        self._subscribed.set()

    def _on_unsubscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self._left.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            was = self._live
            self._live = None
        self._subscribed.clear()
        self._presence_known.clear()
        if was is not None and self._on_disconnect_cb is not None:
            self._on_disconnect_cb(str(reason))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = INVALID_TOPIC
        root = self.options.presence_root
        if root is not None and topic.startswith(root + "/"):
            self._presence(topic[len(root) + 1 :], bytes(message.payload))
            return
        connection = self._live
        if connection is None:
            return  # the connection is going; the broker sends it again
        assert self._deliver is not None
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        self._deliver(Delivery(topic, payload, connection, message.mid, message.qos))

    def _presence(self, member: str, payload: bytes) -> None:
        client_id = unquote(member)
        if client_id == self.options.client_id:
            return
        if payload == PRESENCE_ABSENT:
            self._members[client_id] = False
        elif payload == PRESENCE_PRESENT:
            self._members[client_id] = True
        else:
            self._members.pop(client_id, None)
        if self._on_absent is not None:
            self._on_absent(frozenset(c for c, here in self._members.items() if not here))
