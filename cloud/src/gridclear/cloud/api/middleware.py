"""ASGI middleware of the API: request ids, logs, metrics, security headers, body limit.

Written as plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``,
which costs a task and a stream per request. :class:`RequestContext` is also the
last line of defence: an exception nothing else handled becomes the generic
500 envelope with the request id, and its details go only to the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridclear.cloud.api.envelope import failure_body
from gridclear.cloud.api.errors import ErrorCode
from gridclear.cloud.api.logs import request_id_var
from gridclear.cloud.api.metrics import ApiMetrics

__all__ = ["BodyLimit", "RequestContext", "json_error"]

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
