"""The MQTT publisher: outbox → broker, at QoS 1, deleting only what the broker acknowledged.

One connection at a time, and a reconnect loop outside the client (exponential
backoff with full jitter, capped). On each connection:

- the last will is the retained status ``offline``; ``online`` is published,
  retained, right after connecting and refreshed now and then;
- the *live lane* sends every message signed from now on, in sequence order, as
  soon as the outbox has it;
- the *drain lane* sends what was kept during the outage, oldest first, after a
  random pause (so that a fleet reconnecting together spreads out) and at a
  bounded rate; it never takes more than half of the in-flight window, so live
  readings keep flowing while it works;
- at most ``max_inflight`` messages are unacknowledged at any time, counted here
  rather than left to the client: paho queues without bound and silently drops
  QoS 1 messages beyond 65,535 unacknowledged;
- a message is deleted from the outbox only after its PUBACK. Whatever was in
  flight when the connection broke is sent again on the next one: the receiver
  sees the same bytes under the same sequence number, a redelivery it ignores,
  never a new message.

The session is clean (nothing is left to paho across connections): the outbox,
not the MQTT client, is the memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiomqtt

from gridclear.edge.outbox import Outbox, PendingMessage
from gridclear.shared.protocol import StatusMessage
from gridclear.shared.topics import readings_topic, status_topic

__all__ = ["Publisher", "PublisherSettings", "PublisherStats", "StatusSource"]

log = logging.getLogger("gridclear.edge.publisher")

StatusSource = Callable[[Literal["online", "offline"]], StatusMessage]
"""Builds the status message to publish, in the given state, from current figures."""

_ACK_FLUSH_S = 0.2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class PublisherSettings:
    device_id: str
    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    max_inflight: int = 32
    drain_rate: float = 50.0
    """Backlog messages per second, at most."""
    drain_jitter_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    status_interval_s: float = 60.0
    publish_timeout_s: float = 60.0
    """A PUBACK slower than this means the connection is not working: reconnect."""
    topic_prefix: str = ""

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class PublisherStats:
    connected: bool = False
    connects: int = 0
    acked: int = 0
    """Messages acknowledged by the broker since start."""
    last_ack_ms: int | None = None
    inflight: int = 0
    max_inflight_seen: int = 0
    last_error: str | None = None
    drain_backlog: int = 0
    """Backlog messages (sequence numbers) the drain lane still has to cover."""


class _Finished(Exception):  # noqa: N818 -- a signal that ends a session, not an error
    """Raised inside a session once a requested stop has drained everything."""


@dataclass
class _Session:
    client: aiomqtt.Client
    group: asyncio.TaskGroup
    window: asyncio.Semaphore
    drain_window: asyncio.Semaphore
    acked: list[int] = field(default_factory=list)
    live_done: bool = False
    drain_done: bool = False


class Publisher:
    """Sends the outbox's messages. ``notify()`` after each append; ``run()`` until stopped."""

    def __init__(
        self,
        settings: PublisherSettings,
        outbox: Outbox,
        *,
        status: StatusSource,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.stats = PublisherStats()
        self._outbox = outbox
        self._status = status
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not secrets
        self._new = asyncio.Event()
        self._readings_topic = readings_topic(settings.device_id, prefix=settings.topic_prefix)
        self._status_topic = status_topic(settings.device_id, prefix=settings.topic_prefix)

    def notify(self) -> None:
        """New messages are in the outbox."""
        self._new.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish, reconnecting as needed, until ``stop`` is set.

        After ``stop`` it finishes what it can on the current connection (every
        message in the outbox acknowledged, then the retained ``offline`` status and a
        clean disconnect) and returns; without a connection it returns at once.
        Cancel it to give up waiting.
        """
        backoff = self.settings.reconnect_min_s
        while not stop.is_set():
            try:
                if await self._connection(stop):
                    return
                backoff = self.settings.reconnect_min_s
            except (aiomqtt.MqttError, OSError) as error:
                self.stats.last_error = str(error)
                log.warning("broker connection lost or refused", extra={"error": str(error)})
            if stop.is_set():
                return
            delay = self._rng.uniform(0, backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)
            log.info("reconnecting", extra={"in_s": round(delay, 3)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _connection(self, stop: asyncio.Event) -> bool:
        s = self.settings
        will = self._status("offline")
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.device_id,
            username=s.username,
            password=s.password,
            keepalive=s.keepalive_s,
            will=aiomqtt.Will(self._status_topic, will.encode(), qos=1, retain=True),
            clean_session=True,
            tls_context=s.tls_context(),
            max_inflight_messages=s.max_inflight,
            timeout=s.publish_timeout_s,
        )
        # Our window bounds what is pending; stay quiet up to it.
        client.pending_calls_threshold = s.max_inflight + 4
        async with client:
            self.stats.connected = True
            self.stats.connects += 1
            log.info("connected", extra={"broker": f"{s.host}:{s.port}", "tls": s.tls})
            try:
                return await self._session(client, stop)
            finally:
                self.stats.connected = False
                self.stats.inflight = 0
                await asyncio.to_thread(self._outbox.allow_thinning)

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> bool:
        await asyncio.to_thread(self._outbox.hold_thinning)
        live_from = await asyncio.to_thread(self._outbox.last_seq) + 1
        await self._publish_status(client, "online")
        lost: BaseException | None = None
        finished = False
        session: _Session | None = None
        try:
            async with asyncio.TaskGroup() as group:
                window = asyncio.Semaphore(self.settings.max_inflight)
                drain_window = asyncio.Semaphore(max(1, self.settings.max_inflight // 2))
                session = _Session(client, group, window, drain_window)
                group.create_task(self._watch(client))
                group.create_task(self._live(session, live_from, stop))
                group.create_task(self._drain(session, live_from, stop))
                group.create_task(self._flush_acks(session))
                group.create_task(self._refresh_status(client))
                group.create_task(self._finish_when_stopped(session, stop))
        except* _Finished:
            finished = True
        except* aiomqtt.MqttError as group_error:
            lost = group_error.exceptions[0]
        finally:
            if session is not None and session.acked:
                await asyncio.to_thread(self._outbox.ack, list(session.acked))
        if lost is not None:
            raise lost
        return finished

    async def _watch(self, client: aiomqtt.Client) -> None:
        # The messages iterator is how aiomqtt reports a lost connection: it raises.
        async for _ in client.messages:
            pass

    async def _send(self, session: _Session, message: PendingMessage, *, drain: bool) -> None:
        if drain:
            await session.drain_window.acquire()
        await session.window.acquire()
        self.stats.inflight += 1
        self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, self.stats.inflight)
        session.group.create_task(self._publish(session, message, drain=drain))

    async def _publish(self, session: _Session, message: PendingMessage, *, drain: bool) -> None:
        try:
            await session.client.publish(self._readings_topic, message.token, qos=1)
            session.acked.append(message.seq)
            self.stats.acked += 1
            self.stats.last_ack_ms = _now_ms()
        finally:
            self.stats.inflight -= 1
            session.window.release()
            if drain:
                session.drain_window.release()

    async def _live(self, session: _Session, live_from: int, stop: asyncio.Event) -> None:
        cursor = live_from - 1
        self._new.set()
        while True:
            await self._new.wait()
            self._new.clear()
            while batch := await asyncio.to_thread(
                self._outbox.claim, after_seq=cursor, limit=self.settings.max_inflight
            ):
                for message in batch:
                    await self._send(session, message, drain=False)
                    cursor = message.seq
            session.live_done = stop.is_set()

    async def _drain(self, session: _Session, live_from: int, stop: asyncio.Event) -> None:
        s = self.settings
        backlog = await asyncio.to_thread(self._outbox.stats)
        if backlog.oldest_seq is not None and backlog.oldest_seq < live_from:
            self.stats.drain_backlog = live_from - backlog.oldest_seq
            pause = self._rng.uniform(0, s.drain_jitter_s)
            log.info(
                "draining backlog",
                extra={"messages": self.stats.drain_backlog, "after_s": round(pause, 3)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)  # no pause when stopping
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        cursor = 0
        while batch := await asyncio.to_thread(
            self._outbox.claim,
            after_seq=cursor,
            limit=max(1, min(s.max_inflight, math.ceil(s.drain_rate))),
            upto_seq=live_from - 1,
        ):
            for message in batch:
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at, loop.time()) + 1 / s.drain_rate
                await self._send(session, message, drain=True)
                cursor = message.seq
                self.stats.drain_backlog = max(live_from - 1 - cursor, 0)
        self.stats.drain_backlog = 0
        session.drain_done = True

    async def _flush_acks(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(_ACK_FLUSH_S)
            if session.acked:
                done, session.acked = session.acked, []
                await asyncio.to_thread(self._outbox.ack, done)

    async def _refresh_status(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            await self._publish_status(client, "online")

    async def _publish_status(
        self, client: aiomqtt.Client, state: Literal["online", "offline"]
    ) -> None:
        message = await asyncio.to_thread(self._status, state)
        await client.publish(self._status_topic, message.encode(), qos=1, retain=True)

    async def _finish_when_stopped(self, session: _Session, stop: asyncio.Event) -> None:
        await stop.wait()
        log.info("stopping: sending what is left in the outbox")
        self._new.set()
        while True:
            idle = session.drain_done and session.live_done and self.stats.inflight == 0
            if idle and not self._new.is_set():
                stats = await asyncio.to_thread(self._outbox.stats)
                if stats.depth <= len(session.acked):
                    break
            await asyncio.sleep(0.05)
        if session.acked:
            done, session.acked = session.acked, []
            await asyncio.to_thread(self._outbox.ack, done)
        await self._publish_status(session.client, "offline")
        log.info("stopped cleanly; status offline published")
        raise _Finished
