"""ASGI middleware of the API: request ids, logs, metrics, security headers, body limit,
request deadlines, and the refusal of NUL characters in every string a request carries.

Written as plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``,
which costs a task and a stream per request. :class:`RequestContext` is also the
last line of defence: an exception nothing else handled becomes the generic
500 envelope with the request id, and its details go only to the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridclear.cloud.api.envelope import failure_body
from gridclear.cloud.api.errors import ErrorCode
from gridclear.cloud.api.metrics import ApiMetrics
from gridclear.cloud.logs import request_id_var

__all__ = ["BodyLimit", "Deadline", "NoNul", "RequestContext", "json_error"]

log = logging.getLogger("gridclear.cloud.api.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The interactive docs load Swagger UI from its CDN.
_DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'",
)
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_NO_STORE = (b"cache-control", b"no-store")


def json_error(
    code: ErrorCode,
    message: str | None = None,
    details: object = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[Message, Message]:
    """The two ASGI messages of an error envelope response."""
    body = json.dumps(failure_body(code, message or code.default_message, details)).encode()
    start: Message = {
        "type": "http.response.start",
        "status": code.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestContext:
    """Request id, access log, metrics and security headers for every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, hsts: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        path: str = scope["path"]
        extra = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        extra.append(_DOCS_CSP if path in ("/docs", "/redoc") else _API_CSP)
        if self.hsts:
            extra.append(_HSTS)
        if path.startswith("/api/auth") or path.startswith("/api/keys"):
            extra.append(_NO_STORE)
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error answering %s %s", scope["method"], path)
            if not response_started:
                status = 500
                self.metrics.errors.labels(ErrorCode.INTERNAL_ERROR.value).inc()
                for message in json_error(ErrorCode.INTERNAL_ERROR, headers=extra):
                    await send(message)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.answered(method, template, status, elapsed)
            if log.isEnabledFor(logging.INFO):  # the record's fields cost time to build
                client = scope.get("client")
                log.info(
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
            request_id_var.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


class Deadline:
    """Every ``/api`` request finishes within ``seconds`` or is cancelled and answered 503.

    The request's task is cancelled at the deadline: whatever it awaits stops,
    a PostgreSQL query included (psycopg sends the server a cancel request when
    its wait is cancelled, and the pool rolls the connection back), so no work
    goes on for an answer nobody will read. The answer is ``503
    DEADLINE_EXCEEDED`` with ``Retry-After`` in the headers and
    ``details.retryAfter`` in the envelope. A response already started cannot be
    replaced: its connection is closed instead. Socket.IO and ``/metrics`` are
    not API requests and have no deadline here.
    """

    def __init__(
        self, app: ASGIApp, *, seconds: float, metrics: ApiMetrics, retry_after_s: int = 2
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.metrics = metrics
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(self.seconds)
        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # a TimeoutError of the request's own, not the deadline's
            log.warning(
                "deadline of %.1f s exceeded: %s %s cancelled",
                self.seconds,
                scope["method"],
                scope["path"],
            )
            self.metrics.errors.labels(ErrorCode.DEADLINE_EXCEEDED.value).inc()
            if started:
                raise
            retry = str(self.retry_after_s).encode()
            for message in json_error(
                ErrorCode.DEADLINE_EXCEEDED,
                details={"retryAfter": self.retry_after_s, "deadlineSeconds": self.seconds},
                headers=[(b"retry-after", retry)],
            ):
                await send(message)


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with ``413 PAYLOAD_TOO_LARGE``.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; a chunked body is counted as it arrives and refused when it crosses
    the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    code = ErrorCode.PAYLOAD_TOO_LARGE if declared > 0 else ErrorCode.BAD_REQUEST
                    for message in json_error(code, details={"maxBytes": self.max_bytes}):
                        await send(message)
                    return
        received = 0
        too_large = False

        # Past the limit the app is told the client went away and whatever it answers
        # is dropped; the 413 is sent here. (Raising from receive would not do: the
        # framework turns any error while reading a body into its own 400.)
        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if too_large:
            for message in json_error(
                ErrorCode.PAYLOAD_TOO_LARGE, details={"maxBytes": self.max_bytes}
            ):
                await send(message)


_NUL = "\x00"
_JSON_NUL = b"\\u0000"
"""How JSON writes U+0000 (a raw NUL byte is not JSON and fails to parse anyway)."""
_MAX_REPORTED = 10
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NoNul:
    """Refuse U+0000 in any path, query or JSON body string with ``422 VALIDATION_ERROR``.

    PostgreSQL's text cannot hold NUL, so such a value would fail deep in a route
    (after a password hash, say). Here it is refused before the app sees the
    request, once for every route; ``details`` names each field as a validation
    error does (``["body", "email"]``, ``["query", "to"]``, ``["path", "device_id"]``).

    A body is read whole before the app runs (the framework reads JSON bodies whole
    anyway, and :class:`BodyLimit` outside bounds it) and parsed again only when its
    bytes contain the escape ``\\u0000``. Socket.IO's own transport is left alone.
    """

    def __init__(self, app: ASGIApp, *, skip_prefix: str = "/socket.io") -> None:
        self.app = app
        self.skip_prefix = skip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip_prefix):
            await self.app(scope, receive, send)
            return
        found = [*_nul_in_path(scope), *_nul_in_query(scope["query_string"])]
        if scope["method"] in _BODY_METHODS:
            messages, body = await _read_body(receive)
            if _JSON_NUL in body:
                found.extend(_nul_in_json(body))
            receive = _replay(messages, receive)
        if found:
            details = [
                {"location": location, "message": "must not contain the character U+0000"}
                for location in found[:_MAX_REPORTED]
            ]
            for message in json_error(ErrorCode.VALIDATION_ERROR, details=details):
                await send(message)
            return
        await self.app(scope, receive, send)


def _printable(name: str) -> str:
    return name.replace(_NUL, "\\u0000")


def _nul_in_path(scope: Scope) -> list[list[str]]:
    if _NUL not in scope["path"]:
        return []
    # Name the route's parameter when a route matches (only on this rare path).
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", ()):
        match, child = route.matches(scope)
        if match is Match.FULL:
            params: dict[str, Any] = child.get("path_params", {})
            named = [["path", name] for name, value in params.items() if _NUL in str(value)]
            if named:
                return named
    return [["path"]]


def _nul_in_query(query_string: bytes) -> list[list[str]]:
    if b"%00" not in query_string and b"\x00" not in query_string:
        return []
    # Decoded as the framework decodes it.
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return [["query", _printable(name)] for name, value in pairs if _NUL in name + value]


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = iter(messages)

    async def replay() -> Message:
        message = next(pending, None)
        return message if message is not None else await receive()

    return replay


def _nul_in_json(body: bytes) -> list[list[str]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return []  # not JSON: the framework refuses it on its own terms
    return list(_nul_locations(document, ["body"]))


def _nul_locations(value: object, at: list[str]) -> Iterator[list[str]]:
    # Iterative: a deeply nested document must not exhaust the stack here.
    stack: list[tuple[object, list[str]]] = [(value, at)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _NUL in item:
                yield where
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if _NUL in key:
                    yield [*where, _printable(key)]
                stack.append((child, [*where, _printable(key)]))
        elif isinstance(item, list):
            stack.extend((child, [*where, str(i)]) for i, child in reversed(list(enumerate(item))))
