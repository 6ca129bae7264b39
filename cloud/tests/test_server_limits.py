"""The HTTP server's own limits, against a real ``gridclear-cloud serve`` process over TCP:
an oversized request head is refused, a head or a body that never completes is closed after
its timeout, and slowloris connections neither pile up nor stop a normal request."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from cloud.tests.server_support import serving

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
CLOSE_DEADLINE_S = 30.0
"""How long a test waits for the server to close a connection (far above the timeouts)."""


@pytest.fixture(scope="module")
def server(postgres_admin_url: str, redis_url: str) -> Iterator[tuple[str, int]]:
    with serving(
        postgres_admin_url,
        redis_url,
        GRIDCLEAR_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        GRIDCLEAR_HTTP_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    ) as (host, port, _):
        yield host, port


def _connect(server: tuple[str, int]) -> socket.socket:
    return socket.create_connection(server, timeout=CLOSE_DEADLINE_S)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed by the deadline."""
    received = b""
    deadline = time.monotonic() + CLOSE_DEADLINE_S
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; it sent {received[:200]!r}")
        if not chunk:
            return received
        received += chunk


def test_a_head_over_the_limit_is_refused_with_431(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        # One read's worth: the head is complete, and over the 16 KiB default.
        sock.sendall(
            b"GET /api/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_an_endless_head_is_cut_off_before_it_is_buffered(server: tuple[str, int]) -> None:
    refused = False
    with _connect(server) as sock:
        sock.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(32 * 16):  # up to 32 MiB, as the attack sent
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            refused = True
        answer = b"" if refused else _read_until_closed(sock)
    assert refused or not answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_head_that_never_ends_is_closed_after_the_header_timeout(
    server: tuple[str, int],
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: x\r\n")
        answer = _read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_a_connection_that_sends_nothing_is_closed(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        assert _read_until_closed(sock) == b""


def test_a_body_that_never_ends_is_closed_after_the_body_timeout(
    server: tuple[str, int],
) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"email": "'
        )
        answer = _read_until_closed(sock)
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]


def test_slowloris_connections_do_not_stop_a_normal_request_and_are_closed(
    server: tuple[str, int],
) -> None:
    selector = selectors.DefaultSelector()
    slow: list[socket.socket] = []
    try:
        for i in range(500):
            sock = _connect(server)
            sock.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % i)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            slow.append(sock)
        host, port = server
        served = httpx.get(f"http://{host}:{port}/api/health/live", timeout=CLOSE_DEADLINE_S)
        assert served.status_code == 200

        open_ = set(slow)
        deadline = time.monotonic() + CLOSE_DEADLINE_S
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408"):
                    selector.unregister(sock)
                    open_.discard(sock)
        assert not open_, f"{len(open_)} of {len(slow)} slow connections were never closed"
    finally:
        selector.close()
        for sock in slow:
            sock.close()
