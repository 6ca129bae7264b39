"""What the gateway says about itself: the retained MQTT status and ``gridclear-edge status``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, Literal

from gridclear.edge import __version__
from gridclear.edge.outbox import Outbox
from gridclear.shared.protocol import StatusMessage

__all__ = ["AGENT", "outbox_report", "status_message"]

AGENT = f"gridclear-edge {__version__}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def status_message(
    state: Literal["online", "offline"],
    *,
    device_id: str,
    kid: str,
    outbox: Outbox,
    meters_failing: Collection[str] = (),
    now_ms: Callable[[], int] = _now_ms,
) -> StatusMessage:
    """The retained status message, with the outbox's current figures (blocking)."""
    stats = outbox.stats()
    return StatusMessage(
        device_id=device_id,
        state=state,
        ts_ms=now_ms(),
        agent=AGENT,
        kid=kid,
        last_seq=stats.last_seq,
        outbox_depth=stats.depth,
        oldest_unsent_ms=stats.oldest_unsent_ms,
        thinned_readings=stats.thinned_total,
        meters_failing=tuple(sorted(meters_failing)),
    )


def outbox_report(outbox: Outbox) -> dict[str, Any]:
    """Everything ``gridclear-edge status`` shows: outbox figures and the agent's last word."""
    stats = outbox.stats()
    return {
        "outbox": {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "over_limit": stats.over_limit,
            "last_seq": stats.last_seq,
            "oldest_unsent_seq": stats.oldest_seq,
            "oldest_unsent_ms": stats.oldest_unsent_ms,
            "thinned_readings": stats.thinned_total,
        },
        "agent": outbox.status(),
    }
