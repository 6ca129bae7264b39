"""The market's events through the real Socket.IO side: an app in a slot's room sees
the orders placed over REST, then the slot cleared by a scheduler in another
process (publishing through Redis), and only its own fill notification."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from cloud.tests.api_support import Clock, test_settings
from cloud.tests.market_support import make_slot, set_state, trader
from cloud.tests.test_realtime import Served, listening, serving
from psycopg.rows import dict_row

from gridclear.cloud.market.service import tick
from gridclear.cloud.realtime import EventPublisher
from gridclear.cloud.settings import Settings


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings, Clock()) as running:
        yield running


async def test_a_slots_room_sees_its_orders_its_clearing_and_only_its_own_fill(
    served: Served, settings: Settings
) -> None:
    api = served.api
    buyer = await trader(api, "import")
    seller = await trader(api, "export")
    slot = make_slot(api.database_url)
    token = buyer.headers["Authorization"].removeprefix("Bearer ")
    async with listening(served.url, token) as app:
        assert (await app.call("join_timeslot", slot))["success"] is True
        bid = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 800, "price": 300},
            headers=buyer.headers,
        )
        assert bid.status_code == 201, bid.text
        supply = await api.client.post(
            "/api/supplies",
            json={"timeslotId": slot, "meterId": seller.meter_id, "quantityWh": 500, "price": 100},
            headers=seller.headers,
        )
        assert supply.status_code == 201, supply.text
        name, data = await app.next()
        assert (name, data["id"], data["action"]) == (
            "bid_update",
            bid.json()["data"]["id"],
            "created",
        )
        assert data["userId"] is None  # the room's copy: who placed it is not public
        name, data = await app.next()
        assert (name, data["userId"]) == ("bid_update", buyer.user_id)  # the buyer's own copy
        name, data = await app.next()
        assert (name, data["side"], data["action"]) == ("supply_update", "sell", "created")

        # The scheduler's way: a separate, write-only publisher through Redis.
        assert settings.redis_url is not None
        set_state(api.database_url, slot, "closed")
        async with (
            EventPublisher.from_redis_url(
                settings.redis_url, key_prefix=settings.redis_key_prefix
            ) as events,
            await psycopg.AsyncConnection.connect(
                api.database_url, autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            cur = await conn.execute("SELECT closes_at FROM timeslots WHERE id = %s", (slot,))
            row = await cur.fetchone()
            assert row is not None
            await tick(conn, row["closes_at"], events=events)
            # Messages arrive in order: what comes before this was all there was.
            await events.emit("sentinel", {"n": 1})

        received = []
        while (message := await app.next()) != ("sentinel", {"n": 1}):
            received.append(message)
        ours = [d for n, d in received if n == "timeslot_update" and d["id"] == slot]
        assert len(ours) == 1  # one broadcast reaches the room too: no repeat
        assert ours[0]["state"] == "cleared"
        assert (ours[0]["result"]["price"], ours[0]["result"]["volumeWh"]) == (300, 500)
        # The seller's fill notification went to the seller alone.
        notes = [d for n, d in received if n == "user_notification"]
        assert len(notes) == 1
        assert notes[0]["type"] == "order_filled"
        assert (notes[0]["side"], notes[0]["filledWh"], notes[0]["amount"]) == ("buy", 500, 150)
