"""Account mail: verification and password-reset links, sent over SMTP.

:class:`Mailer` is the boundary, one method. Two implementations ship:

- :class:`SmtpMailer` speaks SMTP with the standard library's :mod:`smtplib`
  (STARTTLS, TLS from the first byte, or plain to a local relay; AUTH when a
  user name is set), one connection per message, in a worker thread. Account
  mail is rare (a person asks for it, within a rate limit), so a thread per
  message costs nothing worth an asynchronous SMTP client as a dependency;
  ``smtplib`` is complete and maintained with Python itself.
- :class:`LogMailer`, for development without a mail server, logs each link at
  WARNING, loudly: the link is a credential, and this is never for production
  (the settings refuse production without SMTP).

:class:`MailOutbox` sends in the background: a request that mails a link
answers without waiting for the mail server, so the answer (and its time) is
the same whether or not a message was sent, which keeps registered addresses
from being told apart. A message that cannot be sent is logged and counted;
closing the outbox waits, bounded, for the messages in flight.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Literal, Protocol

__all__ = ["LogMailer", "MailOutbox", "Mailer", "SmtpMailer", "account_message"]

log = logging.getLogger(__name__)


class Mailer(Protocol):
    """Delivers one message; raises when the mail server refuses it or cannot be reached."""

    async def send(self, message: EmailMessage) -> None: ...


def account_message(*, sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """A plain-text message (links only: no HTML, nothing that loads from elsewhere)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


class SmtpMailer:
    """Sends through an SMTP server, each message on its own connection."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: Literal["starttls", "implicit", "none"],
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._context = ssl_context

    def _send_blocking(self, message: EmailMessage) -> None:
        context = self._context or ssl.create_default_context()
        client: smtplib.SMTP
        if self._tls == "implicit":
            client = smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        with client:
            if self._tls == "starttls":
                client.starttls(context=context)
            if self._username:
                client.login(self._username, self._password or "")
            client.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send_blocking, message)


class LogMailer:
    """Development only: logs each message (with its link) instead of sending it."""

    async def send(self, message: EmailMessage) -> None:
        log.warning(
            "DEVELOPMENT: no SMTP server configured (GRIDCLEAR_SMTP_HOST); this account mail "
            "was NOT sent, its link is logged instead. To %s, %r:\n%s",
            message["To"],
            message["Subject"],
            message.get_content(),
        )


class MailOutbox:
    """Sends messages through a :class:`Mailer` in background tasks this object owns."""

    def __init__(self, mailer: Mailer) -> None:
        self._mailer = mailer
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.sent = 0
        self.failed = 0
        """Messages delivered and given up on so far (for metrics and tests)."""

    def submit(self, message: EmailMessage) -> None:
        """Send ``message`` soon; never raises for a delivery problem (it is logged)."""
        if self._closed:
            log.error("mail outbox closed: message to %s dropped", message["To"])
            self.failed += 1
            return
        task = asyncio.get_running_loop().create_task(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, message: EmailMessage) -> None:
        try:
            await self._mailer.send(message)
        except Exception:  # a mail server problem must not reach the request
            self.failed += 1
            log.exception("could not send account mail to %s", message["To"])
        else:
            self.sent += 1

    async def aclose(self, *, timeout_s: float = 30.0) -> None:
        """Refuse new messages; wait up to ``timeout_s`` for those in flight, then cancel."""
        self._closed = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
