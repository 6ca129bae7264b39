"""The ingest worker: MQTT shared subscription in, verified rows out, acknowledged after commit.

A message may be acknowledged to the broker only once its rows are committed. The
worker receives through an :class:`~gridclear.cloud.ingest.source.IngestSource`, in
production :class:`~gridclear.cloud.ingest.source.MqttSource` (paho-mqtt with
``manual_ack``): a persistent MQTT 5 session (``clean_start=False``, a session
expiry), so a worker killed at any moment loses nothing: the broker redelivers
whatever was not acknowledged when the same client id reconnects, and the writer
skips what it had already committed.

Threads: the source's network loop receives into a queue (it never waits on the
database, so keep-alives continue during an outage); the worker's own thread
takes batches from the queue and verifies them; a writer thread writes, commits,
then acknowledges them. The two are joined by a queue of one batch, so batch N+1
is verified while batch N is in the database (Ed25519 and the database round
trips release the GIL), and batches are written and acknowledged strictly in the
order they were received, each only after its commit.

Backpressure comes from the protocol: the broker sends at most
``receive_maximum`` unacknowledged messages to a client (MQTT 5 Receive Maximum),
so while the database is slow or down the worker holds at most that many, keeps
retrying its batch, and the broker queues the rest (its policy lets the queue
grow, deploy/mosquitto/conf.d); when the database answers again the batch commits,
the acknowledgements go out and the flow resumes.

Stopping (:meth:`IngestWorker.run` after ``stop``) hands the worker's share back to
the group when another member is connected (the group's presence says so; the last
one keeps its session, so a restart loses nothing): it unsubscribes from the shared
subscription (the broker assigns it nothing new), goes on committing and
acknowledging what the broker had already assigned to it until nothing more comes
for ``leave_quiet_s``, then disconnects ending its session, so the broker keeps
nothing for an id that may never return.
If that cannot finish within ``leave_timeout_s`` (the database is down) or
:meth:`IngestWorker.abandon` is called, it disconnects keeping its session, and what
it holds waits for the same client id (docs/INGEST.md, "Scaling down").

Subscriptions (``<prefix>`` is empty in production):

- ``$share/<group>/<prefix>gridclear/v1/devices/+/readings``: the workers of one
  group divide the readings between them;
- ``<prefix>gridclear/v1/devices/+/status``: every worker sees every status
  (retained messages are not sent to shared subscriptions); applying one twice is
  harmless;
- ``<prefix>gridclear/v1/cloud/ingest/<group>/members/+``: the group's presence, so
  that a member away with a persistent session (its share of the readings queued at
  the broker) is reported (``gridclear_ingest_group_members_absent`` and a warning).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from gridclear.cloud.ingest.keys import KeyCache
from gridclear.cloud.ingest.metrics import IngestMetrics
from gridclear.cloud.ingest.plausibility import TimeWindow
from gridclear.cloud.ingest.source import (
    Delivery,
    IngestSource,
    MqttSource,
    MqttSourceOptions,
    presence_root,
)
from gridclear.cloud.ingest.verify import IngestReason, KeyRecord, classify
from gridclear.cloud.ingest.writer import BatchWriter, Item, QuarantineCap, WriteResult
from gridclear.cloud.intervals.compute import DEFAULT_MAX_GAP_MS, DEFAULT_MAX_SPAN_MS
from gridclear.cloud.intervals.maintain import DEFAULT_REFRESH_SLOTS, refresh_intervals
from gridclear.shared.intervals import DEFAULT_SLOT_MS
from gridclear.shared.topics import DEVICE_ID_PATTERN, PREFIX

__all__ = [
    "CLOUD_CLIENT_ID_PREFIX",
    "IngestWorker",
    "WorkerConfig",
    "check_client_id",
    "default_client_id",
]

log = logging.getLogger(__name__)


CLOUD_CLIENT_ID_PREFIX = "gridclear-cloud:"
"""Where the cloud's MQTT client ids begin. No device id contains a ``:``
(:data:`~gridclear.shared.topics.DEVICE_ID_PATTERN`), and the broker gives every gateway
its user name, its device id, as client id; so no gateway can hold, take over or knock
off a session whose id has a ``:``."""

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def default_client_id() -> str:
    """``gridclear-cloud:ingest-<host>``: stable across restarts, as a persistent session
    needs, and never a device id (:func:`check_client_id`)."""
    return f"{CLOUD_CLIENT_ID_PREFIX}ingest-{socket.gethostname()}"[:64]


def check_client_id(client_id: str) -> str:
    """``client_id`` if no gateway could ever connect with it; ValueError saying why otherwise.

    A worker's session holds the readings the broker has sent it and not yet seen
    acknowledged. If a gateway could take that session, the broker would route the
    readings to the gateway, refuse them under its ACL and drop them. The broker binds
    a gateway's client id to its device id, so an id that is not a device id is safe.
    """
    if not client_id or _DEVICE_ID.fullmatch(client_id):
        raise ValueError(
            f"MQTT client id {client_id!r} could be a gateway's device id; give the cloud's "
            f"clients ids with a ':', such as {CLOUD_CLIENT_ID_PREFIX}ingest-1"
        )
    return client_id


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker connects and batches. Every worker of a group needs its own client id."""

    database_url: str
    mqtt_url: str
    client_id: str
    group: str = "gridclear-ingest"
    topic_prefix: str = ""
    batch_max: int = 500
    """Messages per transaction, at most."""
    batch_wait_s: float = 0.02
    """How long a batch waits to fill once its first message is in."""
    receive_maximum: int = 1000
    """Unacknowledged messages the broker may send this worker (MQTT 5 Receive Maximum)."""
    session_expiry_s: int = 7 * 24 * 3600
    """How long the broker keeps the session (and queues for it) while the worker is away."""
    keepalive_s: int = 30
    """Asked of the broker; a Server Keep Alive in its CONNACK replaces it."""
    leave_quiet_s: float = 0.5
    """On stop, how long nothing more must come before the worker's share counts as handed back."""
    presence_wait_s: float = 0.3
    """On stop, how long the group's retained presence messages may take after their SUBACK."""
    leave_timeout_s: float = 30.0
    """On stop, how long the worker tries to hand its share back before it keeps its session."""
    retry_max_s: float = 5.0
    """Longest pause between attempts to write while the database is unreachable."""
    interval_refresh_s: float = 2.0
    """How often the worker recomputes interval energy for new samples (0: never)."""
    slot_ms: int = DEFAULT_SLOT_MS
    max_gap_ms: int = DEFAULT_MAX_GAP_MS
    max_span_ms: int = DEFAULT_MAX_SPAN_MS
    """Longest gap between a meter's samples that interval energy is interpolated over."""
    refresh_slots: int = DEFAULT_REFRESH_SLOTS
    """Slots one interval refresh walks at most; the rest waits for the next one."""
    time_window: TimeWindow = field(default_factory=TimeWindow)
    """How far a message's times may lie from its receipt (else ``implausible_time``)."""
    quarantine_cap: int = QuarantineCap.rows
    """Quarantine rows kept per device and window; further refusals are only counted."""
    quarantine_window_s: float = QuarantineCap.window_ms / 1000


@dataclass(frozen=True, slots=True)
class _Incoming:
    delivery: Delivery
    received_ms: int

    @property
    def topic(self) -> str:
        return self.delivery.topic

    @property
    def payload(self) -> bytes:
        return self.delivery.payload


@dataclass(frozen=True)
class _Verified:
    """A batch and what each of its messages is, judged with keys of ``key_version``."""

    batch: list[_Incoming]
    items: list[Item]
    key_version: int | None
    started: float
    """perf_counter when its verification began, for the batch latency metric."""


_END = object()
"""Tells the writer thread that no batch follows."""


class _Connection:
    """A lazily (re)opened autocommit connection, for one thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class IngestWorker:
    """One ingest worker. :meth:`run` blocks until ``stop`` is set and the worker has left.

    On stop it leaves the group and hands its share back (module docstring), or, when
    that cannot finish, disconnects keeping its session: what it received but did not
    acknowledge is then redelivered to it when it reconnects.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        metrics: IngestMetrics | None = None,
        on_batch: Callable[[WriteResult], None] | None = None,
        source: IngestSource | None = None,
    ) -> None:
        """``source``: where messages come from (default: an :class:`MqttSource` built from
        ``config``)."""
        self.config = config
        self.metrics = metrics or IngestMetrics()
        self._on_batch = on_batch
        # Not SimpleQueue: on CPython 3.11 its get(timeout=...) can block forever when a
        # signal (our SIGTERM) interrupts it just as the timeout runs out, and the
        # worker then never stops. queue.Queue recomputes what is left of the timeout.
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._keys = KeyCache(metrics=self.metrics)
        """Read by the verifying thread."""
        self._write_keys = KeyCache(metrics=self.metrics)
        """Read by the writer thread just before it writes a batch."""
        self._verify_db = _Connection(config.database_url)
        self._write_db = _Connection(config.database_url)
        self._writer = BatchWriter(
            config.database_url,
            quarantine_cap=QuarantineCap(
                rows=config.quarantine_cap,
                window_ms=max(1, round(config.quarantine_window_s * 1000)),
            ),
        )
        self._pipe: queue.Queue[_Verified | object] = queue.Queue(maxsize=1)
        self._writer_failure: BaseException | None = None
        self._abandon = threading.Event()
        """Set when stopping may no longer wait to hand the worker's share back."""
        self._held = 0
        """Messages delivered and not yet acknowledged (or dropped as from an old connection)."""
        self._held_lock = threading.Lock()
        self._last_delivery = time.monotonic()
        self._absent: frozenset[str] = frozenset()
        self._source: IngestSource = source if source is not None else self._make_source()

    # ------------------------------------------------------------ MQTT side

    @property
    def readings_filter(self) -> str:
        return f"$share/{self.config.group}/{self.config.topic_prefix}{PREFIX}/+/readings"

    @property
    def status_filter(self) -> str:
        return f"{self.config.topic_prefix}{PREFIX}/+/status"

    @property
    def presence_filter(self) -> str:
        return f"{presence_root(self.config.topic_prefix, self.config.group)}/+"

    def _make_source(self) -> MqttSource:
        url = urlsplit(self.config.mqtt_url)
        if url.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"the MQTT URL must be mqtt:// or mqtts://, not {url.scheme!r}")
        options = MqttSourceOptions(
            host=url.hostname or "localhost",
            port=url.port or (8883 if url.scheme == "mqtts" else 1883),
            client_id=self.config.client_id,
            filters=(self.readings_filter, self.status_filter),
            leave_filters=(self.readings_filter,),
            presence_root=presence_root(self.config.topic_prefix, self.config.group),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            tls=ssl.create_default_context() if url.scheme == "mqtts" else None,
            keepalive_s=self.config.keepalive_s,
            session_expiry_s=self.config.session_expiry_s,
            receive_maximum=self.config.receive_maximum,
        )
        return MqttSource(
            options,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_absent=self._on_absent,
        )

    def _on_connect(self, session_present: bool) -> None:
        log.info(
            "ingest: connected as %s (session %s)",
            self.config.client_id,
            "resumed" if session_present else "new",
        )
        self.metrics.broker_connected.set(1)

    def _on_disconnect(self, reason: str) -> None:
        self.metrics.broker_connected.set(0)
        log.warning("ingest: disconnected from the broker: %s", reason)

    def _on_absent(self, absent: frozenset[str]) -> None:
        self.metrics.group_members_absent.set(len(absent))
        for client_id in sorted(absent - self._absent):
            log.warning(
                "ingest: group member %s is away without having left: the broker queues its "
                "share of the readings for it until it returns. Start it again with the same "
                "client id, or hand its share back: gridclear-cloud ingest --leave "
                "--client-id %s (docs/INGEST.md, Scaling down)",
                client_id,
                client_id,
            )
        for client_id in sorted(self._absent - absent):
            log.info("ingest: group member %s is back or has left", client_id)
        self._absent = absent

    def _on_message(self, delivery: Delivery) -> None:
        with self._held_lock:
            self._held += 1
        self._last_delivery = time.monotonic()
        self._queue.put(_Incoming(delivery, _now_ms()))
        self.metrics.backlog.inc()

    # ------------------------------------------------------------ database side

    def _next_batch(self, timeout_s: float) -> list[_Incoming]:
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(batch) < self.config.batch_max:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _pause(self, stop: threading.Event, delay: float, error: Exception) -> float | None:
        """Wait out a database outage; the next delay, or None when ``stop`` was set."""
        self.metrics.database_up.set(0)
        log.warning("ingest: database unavailable (%s); retrying in %.1f s", error, delay)
        if stop.wait(delay):
            return None
        return min(delay * 2, self.config.retry_max_s) * random.uniform(0.8, 1.0)  # noqa: S311

    def _classify(self, batch: list[_Incoming], keys: Mapping[str, KeyRecord]) -> list[Item]:
        prefix = self.config.topic_prefix
        return [
            classify(
                m.topic,
                m.payload,
                keys=keys,
                received_ms=m.received_ms,
                topic_prefix=prefix,
                time_window=self.config.time_window,
            )
            for m in batch
        ]

    def _verify(self, batch: list[_Incoming], stop: threading.Event) -> _Verified | None:
        """Classify ``batch`` with the keys as they are now (read from the database).

        Retries while the database is unreachable; None when ``stop`` was set first.
        """
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                keys = self._keys.refresh(self._verify_db.connection())
            except psycopg.OperationalError as error:
                self._verify_db.close()
                pause = self._pause(stop, delay, error)
                if pause is None:
                    return None
                delay = pause
                continue
            return _Verified(batch, self._classify(batch, keys), self._keys.version, started)

    def _store(self, verified: _Verified, stop: threading.Event) -> WriteResult | None:
        """Write a verified batch, retrying while the database is unreachable.

        The keys are read again just before each attempt and, when they changed since
        the batch was verified (a key enrolled or revoked while the batch before it
        was written, or during an outage), the batch is judged again with them: a
        change applies to every batch written after it was committed, as when a
        worker verified each batch just before writing it. None when ``stop`` was
        set before a commit.
        """
        items = verified.items
        judged = verified.key_version
        delay = 0.2
        while True:
            try:
                keys = self._write_keys.refresh(self._write_db.connection())
                if self._write_keys.version != judged:
                    items = self._classify(verified.batch, keys)
                    judged = self._write_keys.version
                result = self._writer.write(items)
            except psycopg.OperationalError as error:
                self._write_db.close()
                pause = self._pause(stop, delay, error)
                if pause is None:
                    return None
                delay = pause
                continue
            self.metrics.database_up.set(1)
            return result

    def _acknowledge(self, batch: list[_Incoming]) -> None:
        # A message from an earlier connection is not acknowledged on this one (the
        # source drops it); the broker redelivers it, and the writer finds it stored.
        self._source.acknowledge([m.delivery for m in batch])
        with self._held_lock:
            self._held -= len(batch)
        self.metrics.backlog.dec(len(batch))

    def _count(self, result: WriteResult, batch: list[_Incoming]) -> None:
        m = self.metrics
        m.messages.labels("stored").inc(result.stored_messages)
        m.messages.labels("duplicate").inc(result.duplicates)
        m.messages.labels("quarantined").inc(len(result.rejected) + len(result.suppressed))
        m.readings.inc(result.stored_readings)
        m.statuses.inc(result.statuses)
        for rejected in result.rejected:
            m.quarantined.labels(rejected.reason.value).inc()
            # The hash finds the message in the quarantine, and in the broker's or the
            # gateway's logs; ascii() keeps whatever the message put in the log line.
            log.log(
                logging.ERROR
                if rejected.reason is IngestReason.INTERNAL_ERROR
                else logging.WARNING,
                "ingest: quarantined a message on %s (sha256 %s): %s: %s",
                ascii(rejected.topic[:200]),
                hashlib.sha256(rejected.body).hexdigest(),
                rejected.reason.value,
                ascii(rejected.detail[:500]),
            )
        if result.suppressed:
            devices: dict[str, int] = {}
            for rejected in result.suppressed:
                m.quarantined.labels(rejected.reason.value).inc()
                m.quarantine_suppressed.labels(rejected.reason.value).inc()
                device = rejected.device_id or "(no device)"
                devices[device] = devices.get(device, 0) + 1
            log.warning(
                "ingest: over the quarantine cap, counted but not kept: %s",
                ", ".join(f"{d!a} {n}" for d, n in sorted(devices.items())[:20]),
            )
        for verdict, count in result.chain.items():
            m.chain.labels(verdict).inc(count)

    def _refresh_intervals(self) -> None:
        # Runs in the writer's thread, between batches: each call is bounded, and when
        # one leaves work for later (a long backlog) the batches go first.
        try:
            while True:
                done = refresh_intervals(
                    self._write_db.connection(),
                    slot_ms=self.config.slot_ms,
                    max_gap_ms=self.config.max_gap_ms,
                    max_span_ms=self.config.max_span_ms,
                    max_slots=self.config.refresh_slots,
                )
                self.metrics.interval_slots.inc(done.slots)
                if done.meters == 0 or done.deferred > 0:
                    return
        except psycopg.OperationalError as error:
            self._write_db.close()
            log.warning("ingest: interval energy not refreshed: %s", error)
        except psycopg.Error as error:
            # Whatever the queue or the samples hold, ingest goes on; the range stays queued.
            log.error("ingest: interval energy not refreshed: %r", error)

    # ------------------------------------------------------------ main loop

    def _write_loop(self) -> None:
        """The writer thread: store, commit and acknowledge verified batches in order.

        Returns on the end marker, or when stopping is abandoned while the database is
        unreachable (what is left is not acknowledged, so the broker redelivers it).
        """
        next_refresh = time.monotonic() + self.config.interval_refresh_s
        while True:
            try:
                verified = self._pipe.get(timeout=0.2)
            except queue.Empty:
                verified = None
            if verified is _END:
                return
            if isinstance(verified, _Verified):
                result = self._store(verified, self._abandon)
                if result is None:
                    return
                self._acknowledge(verified.batch)
                self.metrics.batch_seconds.observe(time.perf_counter() - verified.started)
                self._count(result, verified.batch)
                if self._on_batch is not None:
                    self._on_batch(result)
            if self.config.interval_refresh_s > 0 and time.monotonic() >= next_refresh:
                self._refresh_intervals()
                next_refresh = time.monotonic() + self.config.interval_refresh_s

    def _run_writer(self) -> None:
        try:
            self._write_loop()
        except BaseException as error:
            # Handed to run(), which raises it in the caller's thread once this one ended.
            self._writer_failure = error
        finally:
            self._writer.close()
            self._write_db.close()

    def _hand_over(self, item: _Verified | object, writer: threading.Thread) -> bool:
        """Queue ``item`` for the writer; False if the writer is gone (stopped or failed)."""
        while writer.is_alive():
            try:
                self._pipe.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def _take(self, writer: threading.Thread, timeout_s: float) -> bool:
        """Verify the next batch and hand it to the writer; False when the worker must end."""
        batch = self._next_batch(timeout_s=timeout_s)
        if not batch:
            return True
        verified = self._verify(batch, self._abandon)
        return verified is not None and self._hand_over(verified, writer)

    def _drained(self) -> bool:
        """Whether everything delivered is acknowledged and nothing came for a while."""
        with self._held_lock:
            held = self._held
        quiet = time.monotonic() - self._last_delivery
        return held == 0 and quiet >= self.config.leave_quiet_s

    def _leave(self, writer: threading.Thread) -> bool:
        """Hand the worker's share back; True when nothing is left in its session."""
        deadline = time.monotonic() + self.config.leave_timeout_s
        if not self._others_present(deadline):
            log.warning(
                "ingest: no other member of group %s is connected: keeping this worker's "
                "session, so that the broker keeps what is published until one returns",
                self.config.group,
            )
            return False
        log.info("ingest: leaving group %s, handing back what it holds", self.config.group)
        if not self._source.leave(timeout_s=max(0.0, deadline - time.monotonic())):
            log.warning("ingest: could not unsubscribe before stopping")
            return False
        # The broker now assigns nothing new; what it had assigned keeps coming, one for
        # each acknowledgement, until this session holds nothing.
        self._last_delivery = max(self._last_delivery, time.monotonic())
        while writer.is_alive() and not self._abandon.is_set():
            if time.monotonic() > deadline:
                self._abandon.set()
                break
            if not self._take(writer, timeout_s=0.05):
                break
            if self._queue.empty() and self._drained():
                return True
        return False

    def _watch(self, stop: threading.Event, done: threading.Event, at_once: bool) -> None:
        """Abandon leaving ``leave_timeout_s`` after the stop, wherever the worker waits
        (a batch retried through a database outage included)."""
        while not at_once and not stop.wait(0.5):
            if done.is_set():
                return
        if not done.wait(self.config.leave_timeout_s):
            self._abandon.set()

    def _others_present(self, deadline: float) -> bool:
        """Whether another member of the group is connected to take the stream over.

        With none, leaving would end the only session the readings are queued for, and
        what is published until a worker starts again would reach no one (a restart of
        a single worker). The group's presence comes with the subscriptions; waits a
        little for it after a (re)connect.
        """
        if not isinstance(self._source, MqttSource):
            return True
        source = self._source
        if not source.wait_presence(max(0.0, deadline - time.monotonic())):
            return False
        settle = min(deadline, time.monotonic() + self.config.presence_wait_s)
        while not source.members_present() and time.monotonic() < settle:
            self._abandon.wait(0.05)
        return bool(source.members_present())

    def abandon(self) -> None:
        """Stop without waiting any longer to hand the worker's share back (a second
        SIGTERM): the session is kept for the worker's return."""
        self._abandon.set()

    def run(self, stop: threading.Event, *, leave_at_once: bool = False) -> None:
        """Connect, then take, verify, store and acknowledge batches until ``stop`` is set;
        then leave (module docstring). ``leave_at_once``: only leave, resuming the session
        of ``client_id`` (an operator handing back a vanished worker's share).

        Raises what the writer thread raised, if it failed.
        """
        self._source.start(self._on_message)
        writer = threading.Thread(target=self._run_writer, name="ingest-writer", daemon=True)
        writer.start()
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(stop, done, leave_at_once), name="ingest-stop", daemon=True
        )
        watchdog.start()
        left = False
        try:
            while not stop.is_set() and not leave_at_once and writer.is_alive():
                if not self._take(writer, timeout_s=0.2):
                    break
            else:
                if writer.is_alive():
                    left = self._leave(writer)
            # The writer commits and acknowledges what it was handed, then ends.
            self._hand_over(_END, writer)
            writer.join()
        finally:
            with self._held_lock:
                held = self._held
            end_session = left and held == 0
            if not end_session:
                log.warning(
                    "ingest: stopped keeping its session: what it holds (%d messages received "
                    "and not acknowledged, and whatever the broker queued for it) waits for "
                    "client id %s to return",
                    held,
                    self.config.client_id,
                )
            else:
                log.info("ingest: left the group; the broker keeps nothing for this worker")
            self._source.close(end_session=end_session)
            self._verify_db.close()
            done.set()
        if self._writer_failure is not None:
            raise self._writer_failure

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected and the broker has confirmed the subscriptions."""
        return self._source.wait_ready(timeout_s)
