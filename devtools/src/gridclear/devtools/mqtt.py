"""An MQTT collector for tests: a persistent QoS 1 subscriber that records every message."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple, Self
from urllib.parse import urlsplit

import aiomqtt

from gridclear.devtools.waiting import until

__all__ = ["MqttCollector", "Received"]


class Received(NamedTuple):
    """One message as it arrived."""

    topic: str
    payload: bytes
    retain: bool


@dataclass
class MqttCollector:
    """Records every message on ``topics``, across broker restarts and lost connections.

    It subscribes at QoS 1 under a persistent session (``clean_session=False``),
    so what the broker queued while it was away arrives when it is back, as for
    the cloud's ingest worker. Use :meth:`running` (or run :meth:`run` as a task
    and wait for :attr:`subscribed`), then read :attr:`received` (appended in
    arrival order).
    """

    host: str
    port: int
    topics: list[str]
    received: list[Received] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    identifier: str = field(default_factory=lambda: f"collector-{uuid.uuid4().hex[:8]}")
    reconnect_s: float = 0.1

    @classmethod
    def from_url(cls, url: str, topics: list[str]) -> Self:
        """A collector for an ``mqtt://host:port`` broker."""
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected mqtt://host:port, got {url!r}")
        return cls(parts.hostname, parts.port, topics)

    async def run(self) -> None:
        """Subscribe and record until cancelled; reconnect after every lost connection."""
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.identifier, clean_session=False
                ) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes):
                            raise TypeError(f"payload of {message.topic} is {type(payload)}")
                        self.received.append(Received(str(message.topic), payload, message.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(self.reconnect_s)

    @contextlib.asynccontextmanager
    async def running(self, *, timeout_s: float = 30.0) -> AsyncIterator[Self]:
        """Run in a task, subscribed before this yields; the task is cancelled on leaving.

        A collector left this way keeps its session on the broker: another one with
        the same :attr:`identifier` receives what was queued meanwhile.
        """
        task = asyncio.create_task(self.run())
        try:
            await until(self.subscribed.is_set, timeout_s=timeout_s, what="the subscription")
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def payloads(self, topic: str) -> list[bytes]:
        """The payloads received on ``topic``, in arrival order."""
        return [message.payload for message in self.received if message.topic == topic]
