"""Pure rules of the real-time API: event names, room names, payloads, join requests.

No I/O here, so the rules are tested directly and the servers stay thin.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "MAX_TIMESLOT_ID",
    "BadRequestError",
    "check_event",
    "jsonable",
    "parse_timeslot_id",
    "timeslot_room",
    "user_room",
]

MAX_TIMESLOT_ID = 2**63 - 1
"""Timeslot ids are PostgreSQL ``bigint``s."""

_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Names Socket.IO itself uses on the wire or in clients; an app event must not shadow them.
_RESERVED = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "message", "newListener"}
)
_TIMESLOT_KEYS = ("timeslotId", "timeslot_id", "id")


class BadRequestError(GridclearCloudError, ValueError):
    """Refused input; ``code`` is a stable code for metrics and replies."""

    code = "bad_request"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = reason


def user_room(user_id: int) -> str:
    """The private room every connection of ``user_id`` joins at connect."""
    return f"user:{user_id}"


def timeslot_room(timeslot_id: int) -> str:
    """The room of one timeslot's events (joined with ``join_timeslot``)."""
    return f"timeslot:{timeslot_id}"


def check_event(event: str) -> None:
    """Raise :class:`BadRequestError` unless ``event`` is a lower-case snake_case name."""
    if not isinstance(event, str) or not _EVENT.match(event) or event in _RESERVED:
        raise BadRequestError("bad_event", f"not an event name: {event!r}")


def _default(value: object) -> object:
    # Datetimes go out as RFC 3339 in UTC, as the REST API writes them.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("naive datetime in an event payload")
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not allowed in an event payload")


_SCALARS = frozenset({str, int, bool, type(None)})


def _is_flat_json(data: Mapping[str, Any]) -> bool:
    """Text keys and plain JSON scalars only (most events): nothing to convert or refuse.

    Exact types: an enum or other subclass of ``str``/``int`` takes the full path.
    """
    return all(
        type(key) is str
        and (type(value) in _SCALARS or (type(value) is float and math.isfinite(value)))
        for key, value in data.items()
    )


def jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON types, or :class:`BadRequestError` (``bad_payload``).

    Converting once here, before anything is sent, means a payload either goes
    out whole to every instance or not at all; floats that JSON cannot carry
    (NaN, infinities) are refused rather than sent as invalid JSON.
    """
    if not isinstance(data, Mapping):
        raise BadRequestError("bad_payload", "an event payload is a JSON object")
    if _is_flat_json(data):
        return dict(data)
    try:
        text = json.dumps(data, default=_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequestError("bad_payload", f"the payload is not JSON: {exc}") from exc
    result: dict[str, Any] = json.loads(text)
    return result


def parse_timeslot_id(payload: object) -> int:
    """The timeslot id a ``join_timeslot``/``leave_timeslot`` names.

    Accepted, as apps written for the seed send them: the id itself (``7``),
    its decimal string (``"7"``), or an object ``{"timeslotId": 7}`` (also
    ``timeslot_id`` or ``id``). Anything else raises :class:`BadRequestError`.
    """
    if isinstance(payload, Mapping):
        for key in _TIMESLOT_KEYS:
            if key in payload:
                payload = payload[key]
                break
        else:
            raise BadRequestError("bad_timeslot", 'name the timeslot: {"timeslotId": <id>}')
    value: int
    if isinstance(payload, bool):
        raise BadRequestError("bad_timeslot", "a timeslot id is a positive integer")
    if isinstance(payload, int):
        value = payload
    elif isinstance(payload, str) and payload.isascii() and payload.isdigit() and len(payload) < 20:
        value = int(payload)
    else:
        raise BadRequestError("bad_timeslot", "a timeslot id is a positive integer")
    if not 1 <= value <= MAX_TIMESLOT_ID:
        raise BadRequestError("bad_timeslot", "a timeslot id is a positive integer")
    return value
