"""One logging setup for every cloud process: the API, ingest workers and the scheduler.

Each command calls :func:`configure_logging` once, at start-up, with the level and
format from its settings (``GRIDCLEAR_LOG_LEVEL``, ``GRIDCLEAR_LOG_FORMAT``); nothing
configures logging at import. The format is the one every gridclear process writes
(:mod:`gridclear.shared.logs`); the cloud's JSON lines add the ``request_id`` of the
request being served.

This module sits below every layer so that each process may import it.
"""

from __future__ import annotations

import contextvars
from typing import Literal

from gridclear.shared import logs as _shared
from gridclear.shared.logs import LOG_LEVELS, TextFormatter

__all__ = ["LOG_LEVELS", "JsonFormatter", "TextFormatter", "configure_logging", "request_id_var"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gridclear_request_id", default=None
)
"""The id of the request being served in this task (None outside requests)."""


class JsonFormatter(_shared.JsonFormatter):
    """The shared JSON line, with ``request_id`` while a request is served."""

    def context(self) -> dict[str, str]:
        request_id = request_id_var.get()
        return {"request_id": request_id} if request_id else {}


def configure_logging(*, level: str = "INFO", fmt: Literal["json", "text"] = "json") -> None:
    """Route the root logger to stderr in ``fmt`` at ``level`` (replacing any handler).

    Raises :class:`ValueError` for a level not in :data:`LOG_LEVELS`.
    """
    _shared.configure_logging(level=level, fmt=fmt, json_formatter=JsonFormatter)
