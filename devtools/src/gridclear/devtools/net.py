"""Loopback networking for tests and local runs: free ports, a proxy that can cut connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

__all__ = ["CuttingProxy", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before the caller binds it; servers that can
    listen on port 0 and report their port are the race-free choice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``(host, port)`` whose connections a test can cut.

    Clients connect to :attr:`port`; every byte is relayed both ways, as it came.
    :meth:`cut` closes every open connection at once, as a network failure would,
    and the proxy keeps accepting new ones; :meth:`inject` sends bytes to the
    clients as if the target had sent them (a corrupt packet), and
    :attr:`from_client` holds every byte the clients sent (to see what a client
    acknowledged). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._to_clients: list[socket.socket] = []
        self.from_client = bytearray()
        """Every byte the clients sent through the proxy."""
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()  # the target is down: the client sees a closed connection
                continue
            with self._lock:
                self._open += [client, upstream]
                self._to_clients.append(client)
            for a, b, recorded in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, recorded), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, recorded: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if recorded:
                    self.from_client += data
                # Under the lock, so that injected bytes never split a relayed packet.
                with self._lock:
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def inject(self, data: bytes) -> None:
        """Send ``data`` to every client as if the target had sent it."""
        with self._lock:
            for sock in self._to_clients:
                with contextlib.suppress(OSError):
                    sock.sendall(data)

    def cut(self) -> None:
        """Drop every connection through the proxy, as a network failure would."""
        with self._lock:
            sockets, self._open, self._to_clients = self._open, [], []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._server.close()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
