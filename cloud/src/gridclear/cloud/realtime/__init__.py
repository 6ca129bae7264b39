"""Real-time events over Socket.IO: what apps see, and how gridclear sends it.

Events (the seed's names): ``bid_update``, ``supply_update``,
``timeslot_update`` and ``user_notification``. Rooms: ``user:{id}`` (joined
at connect, private to that user) and ``timeslot:{id}`` (joined with
``join_timeslot``). docs/REALTIME.md documents payloads, auth and scaling.

Senders use :class:`EventPublisher`. The API builds a
:class:`~gridclear.cloud.api.realtime.RealtimeServer` from the fan-out and the
rules exported here and hangs its publisher on ``app.state.events``; other
processes (the scheduler) use ``EventPublisher.from_redis_url``. This package
imports neither FastAPI nor the API (dependencies point down: the server lives
in the API and uses this package, never the reverse), so those processes stay light.
"""

from __future__ import annotations

from enum import StrEnum

from gridclear.cloud.realtime._manager import RedisFanout, channel_name
from gridclear.cloud.realtime._payload import (
    BadRequestError,
    parse_timeslot_id,
    timeslot_room,
    user_room,
)
from gridclear.cloud.realtime.metrics import RealtimeMetrics
from gridclear.cloud.realtime.publisher import EventPublisher

__all__ = [
    "BadRequestError",
    "Event",
    "EventPublisher",
    "RealtimeMetrics",
    "RedisFanout",
    "channel_name",
    "parse_timeslot_id",
    "timeslot_room",
    "user_room",
]


class Event(StrEnum):
    """The events gridclear sends (a ``StrEnum``: pass the member or its string)."""

    BID_UPDATE = "bid_update"
    SUPPLY_UPDATE = "supply_update"
    TIMESLOT_UPDATE = "timeslot_update"
    USER_NOTIFICATION = "user_notification"
