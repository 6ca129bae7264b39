"""A real SMTP server for tests: it accepts every message and keeps it to be read.

:class:`MailSink` runs aiosmtpd's server on a free loopback port, in its own
thread (aiosmtpd's ``Controller``), so the code under test speaks real SMTP to
it. Tests wait for a message to *arrive* (:meth:`MailSink.wait_for` and its
async twin), never for a guessed time; the bound is a liveness bound.

Plain SMTP only (TLS mode ``none``): what the tests check is what the mail says
and that it arrives once, not the TLS handshake, which :mod:`smtplib` owns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

from gridclear.devtools.net import free_port
from gridclear.devtools.waiting import WaitTimeoutError

__all__ = ["MailSink"]


class MailSink:
    """An SMTP server on ``127.0.0.1:port`` that records what it receives."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._messages: list[EmailMessage] = []
        self._arrived = threading.Condition()
        self._controller: Any = None

    # aiosmtpd calls this (in its thread) for each message accepted.
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            self._messages.append(message)
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first (a copy)."""
        with self._arrived:
            return list(self._messages)

    def to(self, address: str) -> list[EmailMessage]:
        """The messages received for ``address`` so far."""
        return [m for m in self.messages if m["To"] == address or address in str(m["To"])]

    def wait_for(
        self,
        condition: Callable[[list[EmailMessage]], bool] | None = None,
        *,
        to: str | None = None,
        count: int = 1,
        timeout_s: float = 30.0,
    ) -> list[EmailMessage]:
        """Block until ``count`` messages to ``to`` (or ``condition(messages)``) arrived.

        Returns the messages for ``to`` (or all); :class:`WaitTimeoutError` past the bound.
        """

        def ready() -> bool:
            chosen = self._chosen(to)
            return condition(chosen) if condition is not None else len(chosen) >= count

        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"timed out after {timeout_s:g} s waiting for mail to {to or 'anyone'}; "
                        f"received {len(self._messages)} message(s)"
                    )
                self._arrived.wait(left)
            return self._chosen(to)

    async def arrival(
        self,
        condition: Callable[[list[EmailMessage]], bool] | None = None,
        *,
        to: str | None = None,
        count: int = 1,
        timeout_s: float = 30.0,
    ) -> list[EmailMessage]:
        """:meth:`wait_for` for async tests (waits in a thread; the event loop runs on)."""
        return await asyncio.to_thread(
            self.wait_for, condition, to=to, count=count, timeout_s=timeout_s
        )

    def _chosen(self, to: str | None) -> list[EmailMessage]:
        if to is None:
            return list(self._messages)
        return [m for m in self._messages if to in str(m["To"])]
