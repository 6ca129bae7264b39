"""The one log format of every gridclear process, cloud and gateway alike.

- ``json`` (the default): one object per line, ``{"time", "level", "logger",
  "message", ...context, ...extra, "exception"?}``, times RFC 3339 in UTC with
  milliseconds, the level in capitals.
- ``text``: ``<time> <LEVEL> <logger>: <message>`` for a terminal.

Neither carries terminal escapes. Libraries put them in log records (uvicorn adds a
``color_message`` copy of its messages with ANSI colours; a client can put them into
anything logged about it), and a log reader must not receive them: the
``color_message`` extra is dropped, and ANSI sequences and other control
characters are removed from every string a line carries.

A process adds fields of its own context (the API its request id) by subclassing
:class:`JsonFormatter` and overriding :meth:`JsonFormatter.context`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["LOG_LEVELS", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The levels ``GRIDCLEAR_LOG_LEVEL`` accepts (any case)."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_DROPPED = {"color_message"}  # uvicorn's coloured duplicate of the message

# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), any other ESC pair, and the
# C0/C1 controls but tab and newline (exception text keeps its lines).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def _clean(text: str) -> str:
    """``text`` without terminal escape sequences or control characters."""
    return text if text.isprintable() else _ESCAPES.sub("", text)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_clean(str(k)): _plain(v) for k, v in value.items()}
    return _clean(str(value))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...context, ...extra}`` per line."""

    def context(self) -> dict[str, str]:
        """Fields of the current context (none here; a process's subclass adds its own)."""
        return {}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _clean(record.getMessage()),
        }
        for key, value in self.context().items():
            entry[key] = _clean(value)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                entry[_clean(key)] = _plain(value)
        if record.exc_info:
            entry["exception"] = _clean(self.formatException(record.exc_info))
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, without terminal escapes."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _clean(super().format(record))


def configure_logging(
    *,
    level: str = "INFO",
    fmt: Literal["json", "text"] = "json",
    json_formatter: type[JsonFormatter] = JsonFormatter,
) -> None:
    """Route the root logger to stderr in ``fmt`` at ``level`` (replacing any handler).

    Raises :class:`ValueError` for a level not in :data:`LOG_LEVELS`.
    """
    name = level.upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
