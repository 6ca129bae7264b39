"""Structured logs: one JSON object per line on stderr, which journald keeps as it is.

The line is the one every gridclear process writes (:mod:`gridclear.shared.logs`),
so one log pipeline reads the gateways' and the cloud's alike.
"""

from __future__ import annotations

import logging

from gridclear.shared.logs import configure_logging as _configure

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO") -> None:
    """Send gridclear's logs (and warnings of the libraries) to stderr as JSON lines."""
    _configure(level="WARNING", fmt="json")
    logging.getLogger("gridclear").setLevel(level.upper())
