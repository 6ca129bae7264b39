"""Socket.IO's Redis client manager, with the two things gridclear needs on top.

``socketio.AsyncRedisManager`` is the fan-out: every instance publishes each
emit on one Redis channel and delivers what it hears to its own clients. We
keep it, and add:

- ``subscribed``: an event set once Redis has confirmed the subscription. The
  API waits for it at start-up, so an instance never reports ready while
  events published by the scheduler or the other instances would still miss it.
  The stock manager drops Redis' confirmation (``ignore_subscribe_messages``),
  so we ask for it and filter it out ourselves.
- a publish that fails loudly: the stock manager logs and gives up after two
  attempts without telling the caller; :class:`FanoutError` lets the
  :class:`~gridclear.cloud.realtime.EventPublisher` count the lost event.
- a faster codec, and our own events dropped as soon as they come back from
  Redis (they were delivered locally when emitted);
- a user's access changed (an account disabled, a session revoked):
  :meth:`RedisFanout.access_changed` tells every instance, which rechecks that
  user's connections at once (``on_access_changed``) rather than at its next
  sweep. A message of our own on the same channel (``method``
  ``gridclear_access_changed``), which stock managers ignore;
- batched publishing: the events emitted at the same moment (a burst of order
  placements) go to Redis as one message, a JSON array of them in order,
  rather than one publish each (:mod:`gridclear.cloud.batching`); every
  gridclear instance reads both shapes. (A stock python-socketio manager on
  the same channel would ignore the arrays: do not mix them.)

Both lean on methods python-socketio documents for pub/sub subclasses
(``_listen``, ``_publish``) plus its ``_redis_connect`` and
``_redis_listen_with_retries``; the version is pinned below 6 and the
real-time tests exercise every one of them against a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pydantic_core
import socketio

from gridclear.cloud.batching import Coalescer
from gridclear.cloud.errors import GridclearCloudError

__all__ = ["ACCESS_CHANGED", "FanoutError", "RedisFanout", "channel_name"]

log = logging.getLogger("gridclear.cloud.realtime")

# A dead Redis must not hold an emitting scheduler for long.
_REDIS_OPTIONS = {"socket_connect_timeout": 2.0}


def channel_name(key_prefix: str) -> str:
    """The Redis channel of one deployment: every API instance and publisher must agree."""
    return f"{key_prefix}socketio"


class FanoutError(GridclearCloudError, RuntimeError):
    """An event could not be published to Redis (the local clients may have it)."""

    code = "fanout_failed"


_BATCH_PREFIX = b"batch "
"""A batch message is ``batch <host id> [<message>, ...]``."""


class _Json:
    """The manager's codec for Redis messages: pydantic-core's JSON, not the stdlib's.

    Every event is encoded once and decoded by every instance; in Rust that costs
    a fraction of what ``json`` does, on the API's busiest path.
    """

    @staticmethod
    def dumps(data: Any) -> bytes:
        return pydantic_core.to_json(data)

    @staticmethod
    def loads(data: str | bytes) -> Any:
        return pydantic_core.from_json(data)


ACCESS_CHANGED = "gridclear_access_changed"
"""The ``method`` of our message saying a user's access changed: ``user_id`` says whose."""


def _failure(data: Any) -> Any:
    if isinstance(data, dict) and data.get("method") in ("emit", ACCESS_CHANGED):
        return FanoutError("the message could not be published to Redis")
    return None


class RedisFanout(socketio.AsyncRedisManager):  # type: ignore[misc]  # untyped library
    """``AsyncRedisManager`` that reports its subscription and its publish failures."""

    redis: Any
    pubsub: Any
    connected: bool

    def __init__(self, url: str, *, channel: str, write_only: bool = False) -> None:
        super().__init__(
            url,
            channel=channel,
            write_only=write_only,
            logger=log,
            redis_options=dict(_REDIS_OPTIONS),
        )
        self.subscribed = asyncio.Event()
        self.on_access_changed: Callable[[int], Coroutine[Any, Any, None]] | None = None
        """Called with a user id when that user's access changed (set by the server)."""
        self._rechecks: set[asyncio.Task[None]] = set()
        self.json = _Json
        self._batch_mark = _BATCH_PREFIX + str(self.host_id).encode() + b" "
        # One batch at a time keeps events in the order they were emitted.
        self._publishes: Coalescer[Any, Any] = Coalescer(
            self._publish_batch, max_batch=512, max_concurrent=1
        )

    def set_server(self, server: Any) -> None:
        super().set_server(server)
        self.json = _Json  # the stock manager takes the server's (stdlib) codec here

    def _redis_connect(self) -> None:
        super()._redis_connect()
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=False)

    async def _listen(self) -> AsyncIterator[Any]:
        channel = self.channel.encode()
        async for message in self._redis_listen_with_retries():
            kind = message.get("type")
            if kind == "subscribe":
                self.subscribed.set()
            elif kind == "message" and message.get("channel") == channel and "data" in message:
                data = message["data"]
                if isinstance(data, bytes) and data.startswith(self._batch_mark):
                    continue  # our own batch: delivered here when it was emitted
                if isinstance(data, bytes) and data.startswith(_BATCH_PREFIX):
                    data = data[data.index(b"[") :]  # another instance's batch
                try:
                    decoded = self.json.loads(data)
                except ValueError:
                    continue  # not ours to read; the stock listener skips it too
                for item in decoded if isinstance(decoded, list) else (decoded,):
                    if self._from_here(item):
                        continue
                    if isinstance(item, dict) and item.get("method") == ACCESS_CHANGED:
                        self._recheck(item.get("user_id"))
                    else:
                        yield item

    def _from_here(self, message: Any) -> bool:
        """Our own emit: delivered here when sent (the stock listener decodes, then drops it)."""
        return (
            isinstance(message, dict)
            and message.get("host_id") == self.host_id
            and message.get("method") != "callback"
        )

    async def access_changed(self, user_id: int) -> None:
        """Have every instance recheck ``user_id``'s connections now; this one first.

        Raises :class:`FanoutError` when Redis did not take the message (this
        instance has rechecked; the others will at their next sweep).
        """
        if self.on_access_changed is not None:
            await self.on_access_changed(user_id)
        message = {"method": ACCESS_CHANGED, "user_id": user_id, "host_id": self.host_id}
        failure = await self._publish(message)
        if isinstance(failure, FanoutError):
            raise failure

    def _recheck(self, user_id: object) -> None:
        """Recheck in a task of its own: the listener goes on delivering events."""
        if self.on_access_changed is None or type(user_id) is not int:
            return
        task: asyncio.Task[None] = asyncio.create_task(self.on_access_changed(user_id))
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _publish(self, data: Any) -> Any:
        return await self._publishes.submit(data)

    async def _publish_batch(self, batch: list[Any]) -> list[Any]:
        """Publish ``batch`` as one Redis message; two attempts, as stock.

        A single message goes out in the stock shape (a JSON object); several go
        out as ``batch <host id> `` and one JSON array of them, which every
        gridclear instance reads (:meth:`_listen`): one publish and one delivery
        per instance for the lot.
        """
        if len(batch) == 1:
            payload = self.json.dumps(batch[0])
        else:
            # Marked with our host id up front, so that we skip our own batch when
            # Redis hands it back without decoding it.
            payload = self._batch_mark + self.json.dumps(batch)
        for retries_left in (1, 0):
            try:
                if not self.connected:
                    self._redis_connect()
                receivers = await self.redis.publish(self.channel, payload)
                return [receivers] * len(batch)
            except Exception as exc:  # any Redis failure: reconnect, retry once
                log.error(
                    "cannot publish %d event(s) to Redis%s: %s",
                    len(batch),
                    "; retrying" if retries_left else "; giving up",
                    exc,
                )
                self.connected = False
        return [_failure(data) for data in batch]

    async def aclose(self) -> None:
        """Publish what is queued, stop listening and close the Redis connections (idempotent)."""
        await self._publishes.aclose()
        thread = getattr(self, "thread", None)
        if isinstance(thread, asyncio.Future) and not thread.done():
            thread.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await thread
        if self.pubsub is not None:
            await self.pubsub.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.pubsub = None
        self.redis = None
        self.connected = False
