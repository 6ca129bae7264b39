"""The real-time rules without a server: names, payloads, join requests, and an
``EventPublisher`` that never raises into its caller, whatever it is given or
whatever state Redis is in (real Redis; a closed port for the dead one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

import gridclear.cloud.realtime as realtime
from gridclear.cloud.realtime import Event, EventPublisher, timeslot_room, user_room
from gridclear.cloud.realtime._payload import (
    BadRequestError,
    check_event,
    jsonable,
    parse_timeslot_id,
)
from gridclear.devtools.net import free_port


def test_the_public_surface() -> None:
    # Senders use the publisher; the API's Socket.IO server (api.realtime) builds
    # on the fan-out and the join rules, which it reaches through this surface.
    assert sorted(realtime.__all__) == [
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
    assert [e.value for e in Event] == [
        "bid_update",
        "supply_update",
        "timeslot_update",
        "user_notification",
    ]
    assert (user_room(7), timeslot_room(12)) == ("user:7", "timeslot:12")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(1, 1), ("42", 42), ({"timeslotId": 3}, 3), ({"timeslot_id": "4"}, 4), ({"id": 5}, 5)],
)
def test_join_requests_in_the_shapes_seed_apps_send(payload: object, expected: int) -> None:
    assert parse_timeslot_id(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [None, 0, -1, True, 1.0, "", " 1", "1.5", "٣", "9" * 20, [1], {"slot": 1}, {"id": None}, 2**63],
)
def test_bad_join_requests_are_refused_with_a_reason(payload: object) -> None:
    with pytest.raises(BadRequestError) as refused:
        parse_timeslot_id(payload)
    assert refused.value.reason == "bad_timeslot"


def test_event_names_are_snake_case_and_not_socketio_s_own() -> None:
    for good in ("bid_update", "trade_update", "x1"):
        check_event(good)
    for bad in ("", "Bid", "bid-update", "connect", "disconnect", "message", "a" * 65, 7):
        with pytest.raises(BadRequestError):
            check_event(bad)  # type: ignore[arg-type]


def test_payloads_become_plain_json() -> None:
    sid = uuid.uuid4()
    sent = jsonable(
        {
            "at": datetime(2026, 5, 1, 12, 15, tzinfo=UTC),
            "day": date(2026, 5, 1),
            "session": sid,
            "event": Event.BID_UPDATE,
            "tags": frozenset({"b", "a"}),
            "fills": ({"id": 1, "quantityWh": 500},),
        }
    )
    assert sent == {
        "at": "2026-05-01T12:15:00Z",
        "day": "2026-05-01",
        "session": str(sid),
        "event": "bid_update",
        "tags": ["a", "b"],
        "fills": [{"id": 1, "quantityWh": 500}],
    }
    for bad in ({"at": datetime(2026, 5, 1)}, {"x": float("nan")}, {"x": object()}, [1]):
        with pytest.raises(BadRequestError) as refused:
            jsonable(bad)  # type: ignore[arg-type]
        assert refused.value.reason == "bad_payload"


def _count(publisher: EventPublisher, name: str, **labels: str) -> float:
    value = publisher.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_emit_refuses_bad_input_without_raising_and_counts_it() -> None:
    # Nothing listens on this port: bad input must be refused before any connection.
    async with EventPublisher.from_redis_url(f"redis://127.0.0.1:{free_port()}") as events:
        await events.emit("Bad Name", {})
        await events.emit("bid_update", {"at": datetime(2026, 1, 1)})
        await events.emit("bid_update", {}, room="timeslot:1", user_id=3)
        await events.emit("bid_update", {}, user_id="3")  # type: ignore[arg-type]
        await events.emit("bid_update", {}, room="")
        failures = "gridclear_realtime_emit_failures_total"
        assert _count(events, failures, event="invalid", reason="bad_event") == 1
        assert _count(events, failures, event="bid_update", reason="bad_payload") == 1
        assert _count(events, failures, event="bid_update", reason="bad_target") == 3
        assert _count(events, "gridclear_realtime_events_emitted_total", event="bid_update") == 0


async def test_emit_with_redis_down_does_not_raise_and_counts_the_loss() -> None:
    registry = CollectorRegistry()
    dead = f"redis://127.0.0.1:{free_port()}"
    async with EventPublisher.from_redis_url(dead, registry=registry) as events:
        await events.emit("timeslot_update", {"id": 1})
        await events.emit("timeslot_update", {"id": 2})
    assert (
        registry.get_sample_value(
            "gridclear_realtime_emit_failures_total",
            {"event": "timeslot_update", "reason": "redis"},
        )
        == 2
    )


async def test_a_write_only_publisher_publishes_on_the_deployment_channel(
    redis_url: str, redis_prefix: str
) -> None:
    """What an API instance subscribes to: ``{prefix}socketio``, Socket.IO's message."""
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{redis_prefix}socketio")
    try:
        async with EventPublisher.from_redis_url(redis_url, key_prefix=redis_prefix) as events:
            await events.emit("user_notification", {"fill": 1}, user_id=9)
            await events.emit("timeslot_update", {"id": 3}, room="timeslot:3")
            await events.emit("timeslot_update", {"id": 4})
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(got) < 3:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    got.append(json.loads(message["data"]))
        assert [(m["event"], m["room"], m["data"]) for m in got] == [
            ("user_notification", "user:9", [{"fill": 1}]),
            ("timeslot_update", "timeslot:3", [{"id": 3}]),
            ("timeslot_update", None, [{"id": 4}]),
        ]
        assert _count(events, "gridclear_realtime_events_emitted_total", event="timeslot_update")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
