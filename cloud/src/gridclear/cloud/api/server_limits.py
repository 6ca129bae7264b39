"""The HTTP server's own limits: request head size, head and body timeouts.

uvicorn's httptools protocol reads a request head of any size (llhttp has no
limit, and httptools keeps a header value growing until it ends) and sets no
timer before the first response: a connection that sends nothing, half a head
or half a body stays open for ever. :class:`GuardedHttpToolsProtocol` is that
protocol with three limits added at the connection, below the ASGI app, where
nothing has been buffered or parsed for the app yet:

1. **Head size.** The bytes received while a head is incomplete are counted
   after each read; past ``max_head_bytes`` the connection is answered
   ``431`` and closed (so at most one read beyond the limit is ever buffered).
   A head that completes within one read is measured exactly and refused the
   same way.
2. **Head timeout.** From the moment a connection opens, and from the first
   byte of each later request, the whole head must arrive within
   ``header_timeout_s``; otherwise the connection is closed (with ``408`` when
   part of a head had arrived).
3. **Body timeout.** Once a head has arrived, its whole body must arrive
   within ``body_timeout_s``; otherwise the connection is closed and the app
   sees the client disconnect.

Idle keep-alive connections are uvicorn's own ``timeout_keep_alive``; the
number of connections per process is its ``limit_concurrency`` (new requests
past it answer 503). :func:`uvicorn_options` gathers all of them from the
settings. A WebSocket upgrade leaves this protocol, and its timers, behind.

The class extends uvicorn's ``HttpToolsProtocol`` through its parser callbacks
and ``data_received``; ``cloud/tests/test_server_limits.py`` checks the
behaviour against a real server, so an upgrade of uvicorn that changes them
shows there.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gridclear.cloud.api.envelope import failure_body
from gridclear.cloud.api.errors import ErrorCode
from gridclear.cloud.settings import Settings

__all__ = ["GuardedHttpToolsProtocol", "ServerLimits", "uvicorn_options"]


@dataclass(frozen=True)
class ServerLimits:
    """What one connection may take; see the module docstring."""

    max_head_bytes: int
    header_timeout_s: float
    body_timeout_s: float


def _close_with(transport: asyncio.Transport, status: int, reason: str, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    transport.write(head + body)
    transport.close()


def _envelope(code: ErrorCode, message: str, details: Any) -> bytes:
    return json.dumps(failure_body(code, message, details)).encode()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and head and body timeouts."""

    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._in_head = True
        self._head_bytes = 0
        self._head_started = False
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self._refused and not self.transport.is_closing():
            # Counted after the parser saw them: on_message_begin may have reset the count
            # in this very read. Over-counts at most the tail of the previous request.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_head_bytes:
                self._refuse_head()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._in_head = False
        super().handle_websocket_upgrade()

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_started = True
        self._head_bytes = 0
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._cancel_head_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_head_bytes:
            self._refuse_head()
            return
        self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._cancel_body_timer()
        super().on_message_complete()

    # -------------------------------------------------------------- limits

    def _refuse_head(self) -> None:
        self._refused = True
        self._cancel_timers()
        limit = self._limits.max_head_bytes
        body = _envelope(
            ErrorCode.BAD_REQUEST,
            f"The request head (request line and headers) is larger than {limit} bytes",
            {"maxHeadBytes": limit},
        )
        _close_with(self.transport, 431, "Request Header Fields Too Large", body)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self._refused = True
        self._cancel_timers()
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._head_started and not answering:
            body = _envelope(
                ErrorCode.BAD_REQUEST,
                "The request head did not arrive in time",
                {"headerTimeoutSeconds": self._limits.header_timeout_s},
            )
            _close_with(self.transport, 408, "Request Timeout", body)
        else:
            self.transport.close()

    def _body_timed_out(self) -> None:
        # The app may be reading the body: closing makes its next receive a disconnect.
        self._body_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` that apply the settings' server limits."""
    limits = ServerLimits(
        max_head_bytes=settings.http_max_head_bytes,
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
    )
    # uvicorn calls its protocol class with config, server_state and app_state; a
    # partial of a module-level class pickles, so worker processes get it too.
    protocol = cast(
        "type[asyncio.Protocol]", functools.partial(GuardedHttpToolsProtocol, limits=limits)
    )
    return {
        "http": protocol,
        "timeout_keep_alive": settings.http_keepalive_timeout_s,
        "limit_concurrency": settings.http_max_connections,
        # Used only if the h11 implementation were chosen; the same bound, for safety.
        "h11_max_incomplete_event_size": settings.http_max_head_bytes,
    }
