"""The Socket.IO server of the API: authentication at connect, rooms, fan-out.

- A client connects with its access token in the ``auth`` payload
  (``{"token": "..."}``) or an ``Authorization: Bearer`` header. The token is
  checked exactly as REST checks it (signature, expiry, revoked session,
  disabled account, rate limits); a refusal carries the REST error code.
- Every connection joins its user's private room ``user:{id}``; clients join
  and leave ``timeslot:{id}`` rooms with ``join_timeslot``/``leave_timeslot``.
- :meth:`RealtimeServer.sweep` disconnects connections whose token has expired,
  whose session was revoked (a logout reaches open sockets too) or whose account
  is disabled; the API runs it periodically. When gridclear itself takes access
  away (an admin disables an account, a logout, a password change), it says so
  with :meth:`~gridclear.cloud.realtime.EventPublisher.access_changed`: every
  instance runs the same checks on that user's connections at once
  (:meth:`RealtimeServer.recheck_user`).
- Emits go through :class:`~gridclear.cloud.realtime.RedisFanout`, so
  every API instance of a deployment delivers every event to its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import socketio

from gridclear.cloud.api.deps import Principal, auth_failure, hit_limit, token_principal
from gridclear.cloud.api.envelope import failure_body
from gridclear.cloud.api.errors import ApiError, ErrorCode
from gridclear.cloud.api.services import Services
from gridclear.cloud.identity import accounts
from gridclear.cloud.identity.apikeys import KEY_MARKER
from gridclear.cloud.realtime import (
    BadRequestError,
    EventPublisher,
    RealtimeMetrics,
    RedisFanout,
    channel_name,
    parse_timeslot_id,
    timeslot_room,
    user_room,
)

__all__ = ["JOIN_TIMESLOT", "LEAVE_TIMESLOT", "MAX_ROOMS", "RealtimeServer"]

log = logging.getLogger("gridclear.cloud.realtime")

JOIN_TIMESLOT = "join_timeslot"
LEAVE_TIMESLOT = "leave_timeslot"
MAX_ROOMS = 64
"""Timeslot rooms one connection may be in at once (bounds a client's memory cost)."""
_MAX_MESSAGE_BYTES = 16 * 1024
"""Clients only send small control messages; anything larger is refused by Engine.IO."""


@dataclass
class _Connection:
    user_id: int
    session_id: uuid.UUID | None
    expires_at: datetime | None
    timeslots: set[int]
    dropped_for: str | None = None


class RealtimeServer:
    """A python-socketio ``AsyncServer`` wired to gridclear's identity and Redis.

    ``services`` is called at each connect (the API builds its services in the
    lifespan, after this object exists). Call :meth:`start` before serving and
    :meth:`stop` after; :attr:`asgi` is the ASGI app to mount at ``/socket.io``.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        key_prefix: str,
        services: Callable[[], Services],
        metrics: RealtimeMetrics,
    ) -> None:
        self._services = services
        self.metrics = metrics
        self.manager = RedisFanout(redis_url, channel=channel_name(key_prefix))
        # CORS for the polling transport is answered by the API's CORS middleware
        # (one allowlist for REST and Socket.IO); Engine.IO's own check is off so
        # the headers are not sent twice. Tokens travel in the auth payload, never
        # in cookies, so a foreign page cannot ride a user's connection.
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=self.manager,
            cors_allowed_origins=[],
            max_http_buffer_size=_MAX_MESSAGE_BYTES,
            logger=False,
            engineio_logger=False,
        )
        self.asgi: Any = socketio.ASGIApp(self.sio, socketio_path=None)
        self.events = EventPublisher(self.sio, metrics=metrics)
        self._connections: dict[str, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.manager.on_access_changed = self._on_access_changed
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on(JOIN_TIMESLOT, self._on_join)
        self.sio.on(LEAVE_TIMESLOT, self._on_leave)

    async def start(self, *, sweep_every_s: float | None = None, timeout_s: float = 10.0) -> None:
        """Subscribe to the deployment's channel; returns once Redis confirmed it.

        With ``sweep_every_s``, :meth:`sweep` runs that often until :meth:`stop`.
        """
        # python-socketio starts its manager at the first connection; starting it
        # here means events published before anyone connected are not the only
        # ones at risk, and readiness can wait for the subscription.
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.manager.initialize()
        await asyncio.wait_for(self.manager.subscribed.wait(), timeout_s)
        if sweep_every_s is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(sweep_every_s))

    async def stop(self) -> None:
        """Disconnect every client, stop background tasks, close Redis."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for sid in list(self._connections):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid, ignore_queue=True)
        await self.sio.shutdown()
        await self.manager.aclose()

    @property
    def connected(self) -> int:
        """Clients connected to this instance."""
        return len(self._connections)

    # ------------------------------------------------------------ handlers

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object) -> None:
        services = self._services()
        try:
            principal = await self._authenticate(services, environ, auth)
        except ApiError as exc:
            self.metrics.refused.labels(exc.code.value).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code.value, "details": exc.details}
            ) from exc
        except Exception as exc:
            # The database or Redis did not answer (a pool timeout under a connect
            # storm, an outage): refuse clearly, so the client retries, rather than
            # leave it waiting on a half-open connection.
            log.warning("real-time connect refused: %s: %s", type(exc).__name__, exc)
            code = ErrorCode.SERVICE_UNAVAILABLE
            self.metrics.refused.labels(code.value).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                code.default_message, {"code": code.value, "details": None}
            ) from exc
        user_id = principal.user.id
        self._connections[sid] = _Connection(
            user_id=user_id,
            session_id=principal.session_id,
            expires_at=principal.expires_at,
            timeslots=set(),
        )
        await self.sio.enter_room(sid, user_room(user_id))
        self.metrics.connections.set(len(self._connections))

    async def _authenticate(
        self, services: Services, environ: dict[str, Any], auth: object
    ) -> Principal:
        scope = environ.get("asgi.scope") or {}
        client = scope.get("client")
        await hit_limit(services, "api", client[0] if client else "unknown")
        token = _token(environ, auth)
        if not token:
            raise auth_failure(services, ErrorCode.AUTHENTICATION_REQUIRED)
        if token.startswith(KEY_MARKER):
            raise auth_failure(
                services, ErrorCode.FORBIDDEN, "Real-time events need a signed-in user's token"
            )
        # Checks the session's revocation and counts its identity's rate limit.
        return await token_principal(services, token)

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        connection = self._connections.pop(sid, None)
        if connection is not None:
            self.metrics.disconnects.labels(connection.dropped_for or str(reason)).inc()
        self.metrics.connections.set(len(self._connections))

    async def _on_join(self, sid: str, data: object = None) -> dict[str, Any]:
        connection = self._connections.get(sid)
        if connection is None:  # a message racing its own disconnect
            return _refusal("not_connected", "The connection is closed")
        try:
            timeslot_id = parse_timeslot_id(data)
        except BadRequestError as exc:
            self.metrics.client_errors.labels(JOIN_TIMESLOT, exc.reason).inc()
            return _refusal(exc.reason, str(exc))
        if timeslot_id not in connection.timeslots and len(connection.timeslots) >= MAX_ROOMS:
            self.metrics.client_errors.labels(JOIN_TIMESLOT, "too_many_rooms").inc()
            return _refusal("too_many_rooms", f"At most {MAX_ROOMS} timeslot rooms at once")
        room = timeslot_room(timeslot_id)
        await self.sio.enter_room(sid, room)
        connection.timeslots.add(timeslot_id)
        return {"success": True, "data": {"room": room, "timeslotId": timeslot_id}}

    async def _on_leave(self, sid: str, data: object = None) -> dict[str, Any]:
        connection = self._connections.get(sid)
        if connection is None:
            return _refusal("not_connected", "The connection is closed")
        try:
            timeslot_id = parse_timeslot_id(data)
        except BadRequestError as exc:
            self.metrics.client_errors.labels(LEAVE_TIMESLOT, exc.reason).inc()
            return _refusal(exc.reason, str(exc))
        room = timeslot_room(timeslot_id)
        await self.sio.leave_room(sid, room)
        connection.timeslots.discard(timeslot_id)
        return {"success": True, "data": {"room": room, "timeslotId": timeslot_id}}

    # ------------------------------------------------------------ sweeping

    async def sweep(self) -> int:
        """Disconnect clients no longer allowed; returns how many.

        Those whose token expired, whose session was revoked, or whose account is
        disabled (or gone). A client that wants to stay connected reconnects with a
        fresh token.
        """
        return await self._close_lost(list(self._connections.items()))

    async def recheck_user(self, user_id: int) -> int:
        """:meth:`sweep`'s checks on ``user_id``'s connections here, now; returns how many."""
        mine = [(sid, c) for sid, c in self._connections.items() if c.user_id == user_id]
        return await self._close_lost(mine) if mine else 0

    async def _on_access_changed(self, user_id: int) -> None:
        try:
            await self.recheck_user(user_id)
        except Exception:
            # The periodic sweep applies the same checks later.
            log.exception("real-time recheck of user %s failed", user_id)

    async def _close_lost(self, connections: list[tuple[str, _Connection]]) -> int:
        services = self._services()
        now = services.clock()
        doomed: dict[str, str] = {}
        for sid, connection in connections:
            if connection.expires_at is not None and connection.expires_at <= now:
                doomed[sid] = "token_expired"
        live = [(sid, c) for sid, c in connections if sid not in doomed]
        if live:
            async with services.pool.connection() as conn:
                users = await accounts.get_users(conn, sorted({c.user_id for _, c in live}))
            for sid, connection in live:
                user = users.get(connection.user_id)
                if user is None or user.disabled:
                    doomed[sid] = "account_disabled"
        live = [(sid, c) for sid, c in live if sid not in doomed]
        sessions = {c.session_id for _, c in live if c.session_id is not None}
        revoked = {sid for sid in sessions if await services.revocations.is_revoked(sid)}
        for sid, connection in live:
            if connection.session_id in revoked:
                doomed[sid] = "session_revoked"
        closed = 0
        for sid, reason in doomed.items():
            still = self._connections.get(sid)
            if still is None:  # gone while we checked
                continue
            still.dropped_for = reason
            closed += 1
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        return closed

    async def _sweep_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("real-time sweep failed; retrying in %.0f s", every_s)


def _token(environ: dict[str, Any], auth: object) -> str | None:
    """The access token from the auth payload, else from the Authorization header."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        value = str(auth["token"]).strip()
        # Apps written for the seed sometimes pass the header value itself.
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        return value or None
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str):
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _refusal(reason: str, message: str) -> dict[str, Any]:
    """A refused client request, in the REST error envelope (code VALIDATION_ERROR)."""
    return failure_body(ErrorCode.VALIDATION_ERROR, message, {"reason": reason})
