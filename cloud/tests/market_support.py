"""Helpers for the market tests: participants with meters, slots in a chosen state,
and an event sink that records what the market emits."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cloud.tests.api_support import Api, bearer


@dataclass
class Trader:
    user_id: int
    headers: dict[str, str]
    meter_id: int


async def trader(api: Api, role: str) -> Trader:
    """A new participant who owns one meter with ``role`` (import, export or both)."""
    session = await api.register(f"trader-{uuid.uuid4().hex[:8]}@example.org")
    user_id = int(session["user"]["id"])
    device = f"gw-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO devices (device_id) VALUES (%s) RETURNING id", (device,)
        ).fetchone()
        assert row is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm1', %s, %s)"
            " RETURNING id",
            (row[0], user_id, role),
        ).fetchone()
        assert meter is not None
    return Trader(user_id, bearer(session["accessToken"]), int(meter[0]))


def make_slot(url: str, state: str = "open", *, price_cap: int = 1_000_000) -> int:
    """A slot starting an hour from now (unique start) in ``state``; returns its id."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(
        hours=1, minutes=15 * (uuid.uuid4().int % 100_000)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at, state,"
            " price_floor, price_cap) VALUES (%s, %s, %s, %s, %s, %s, 0, %s) RETURNING id",
            (
                start,
                start + timedelta(minutes=15),
                start - timedelta(hours=2),
                start - timedelta(minutes=5),
                start + timedelta(minutes=30),
                state,
                price_cap,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def set_state(url: str, slot_id: int, state: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE timeslots SET state = %s WHERE id = %s", (state, slot_id))


@dataclass
class RecordedEvents:
    """An event sink keeping every emit, for assertions."""

    sent: list[tuple[str, dict[str, Any], str | None, int | None]] = field(default_factory=list)

    async def emit(
        self,
        event: str,
        data: Mapping[str, Any],
        *,
        room: str | None = None,
        user_id: int | None = None,
    ) -> None:
        self.sent.append((event, dict(data), room, user_id))

    def named(self, event: str) -> list[tuple[dict[str, Any], str | None, int | None]]:
        return [(d, r, u) for e, d, r, u in self.sent if e == event]
