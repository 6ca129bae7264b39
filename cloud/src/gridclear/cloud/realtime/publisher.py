"""``EventPublisher``: how any part of gridclear sends a real-time event.

One interface for both places events start from:

- in the API process, ``EventPublisher(server)`` is bound to the Socket.IO
  server: local clients get the event at once and Redis carries it to the other
  API instances (``app.state.events``);
- elsewhere (the scheduler), ``EventPublisher.from_redis_url(url, key_prefix=...)``
  is a write-only Redis publisher: it holds no clients and every API instance
  of the deployment delivers what it publishes.

``emit`` never raises into the caller: a market transition must not fail
because a notification could not go out. Failures are logged and counted in
``gridclear_realtime_emit_failures`` by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from prometheus_client import CollectorRegistry

from gridclear.cloud.realtime._manager import (
    ACCESS_CHANGED,
    FanoutError,
    RedisFanout,
    channel_name,
)
from gridclear.cloud.realtime._payload import (
    BadRequestError,
    check_event,
    jsonable,
    user_room,
)
from gridclear.cloud.realtime.metrics import RealtimeMetrics

__all__ = ["EventPublisher"]

log = logging.getLogger("gridclear.cloud.realtime")


class _Emitter(Protocol):
    """What both ``socketio.AsyncServer`` and a pub/sub manager offer."""

    async def emit(self, event: str, data: Any, *, namespace: str, room: str | None) -> Any: ...


class EventPublisher:
    """Sends events to everyone, to a room, or to one user's connections."""

    def __init__(self, server: Any, *, metrics: RealtimeMetrics | None = None) -> None:
        """Bind to ``server`` (a ``socketio.AsyncServer``, or a write-only manager)."""
        self._target: _Emitter = server
        self.metrics = metrics or RealtimeMetrics()
        self._owned: RedisFanout | None = None

    @classmethod
    def from_redis_url(
        cls,
        url: str,
        *,
        key_prefix: str = "gridclear:",
        registry: CollectorRegistry | None = None,
    ) -> EventPublisher:
        """A write-only publisher for processes without clients (the scheduler).

        ``key_prefix`` must be the deployment's ``GRIDCLEAR_REDIS_KEY_PREFIX``: it
        names the channel the API instances listen on. Nothing connects until
        the first emit; close with :meth:`aclose` (or ``async with``).
        """
        manager = RedisFanout(url, channel=channel_name(key_prefix), write_only=True)
        publisher = cls(manager, metrics=RealtimeMetrics(registry))
        publisher._owned = manager
        return publisher

    async def emit(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        room: str | None = None,
        user_id: int | None = None,
    ) -> None:
        """Send ``event`` with the JSON object ``data``.

        ``room`` (``"timeslot:7"``) reaches the clients that joined it;
        ``user_id`` reaches that user's connections only (their private room
        ``user:{id}``); neither broadcasts to every connected client. Naming
        both is refused. Datetimes (aware), dates, UUIDs and enums in ``data``
        are sent as strings. Never raises: failures are logged and counted.
        """
        label = event if isinstance(event, str) and len(event) <= 64 else "invalid"
        try:
            check_event(event)
            payload = jsonable(data)
            target = self._target_room(room, user_id)
        except BadRequestError as exc:
            if exc.reason == "bad_event":
                label = "invalid"
            self.metrics.emit_failures.labels(label, exc.reason).inc()
            log.error("real-time event %r not sent: %s", label, exc)
            return
        try:
            await self._target.emit(event, payload, namespace="/", room=target)
        except FanoutError as exc:
            self.metrics.emit_failures.labels(event, "redis").inc()
            log.error("real-time event %r to %s not published: %s", event, target or "*", exc)
            return
        except Exception:
            self.metrics.emit_failures.labels(event, "error").inc()
            log.exception("real-time event %r to %s not sent", event, target or "*")
            return
        self.metrics.emitted.labels(event).inc()

    async def access_changed(self, user_id: int) -> None:
        """Say that ``user_id`` lost some access (account disabled, session revoked).

        Every API instance rechecks that user's connections at once and closes
        those no longer allowed, as its periodic sweep would (the sweep remains
        the rule; this only makes it prompt). Call it after the change is
        committed. Never raises: a failure is logged and counted (reason
        ``redis``), and the sweep still closes the connections later.
        """
        manager = self._owned or getattr(self._target, "manager", None)
        if not isinstance(manager, RedisFanout):
            return
        try:
            await manager.access_changed(user_id)
        except Exception as exc:
            self.metrics.emit_failures.labels(ACCESS_CHANGED, "redis").inc()
            log.error("access change of user %s not published: %s", user_id, exc)

    @staticmethod
    def _target_room(room: str | None, user_id: int | None) -> str | None:
        if room is not None and user_id is not None:
            raise BadRequestError("bad_target", "name a room or a user, not both")
        if user_id is not None:
            if isinstance(user_id, bool) or not isinstance(user_id, int):
                raise BadRequestError("bad_target", f"a user id is an integer: {user_id!r}")
            return user_room(user_id)
        if room is not None and (not isinstance(room, str) or not room):
            raise BadRequestError("bad_target", f"a room is a non-empty string: {room!r}")
        return room

    async def aclose(self) -> None:
        """Close the Redis connection of a publisher made by :meth:`from_redis_url`."""
        if self._owned is not None:
            await self._owned.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
