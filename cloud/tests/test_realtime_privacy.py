"""Who placed an order is private in real time as in REST: a slot's room carries each
order as the slot's public listing shows it (no owner, no meter), and the owner gets
the whole order on their private room. Real uvicorn, Redis, PostgreSQL and
``socketio.AsyncClient`` connections; absence is proven by order (see test_realtime)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cloud.tests.api_support import Clock, test_settings
from cloud.tests.market_support import Trader, make_slot, trader
from cloud.tests.test_realtime import Listener, Served, listening, serving

from gridclear.cloud.settings import Settings


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings, Clock()) as running:
        yield running


def _token(who: Trader) -> str:
    return who.headers["Authorization"].removeprefix("Bearer ")


async def _public_listing(served: Served, viewer: Trader, path: str) -> dict[int, Any]:
    """The slot's orders as ``viewer`` reads them over REST, by id."""
    listed = await served.api.client.get(path, headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    return {order["id"]: order for order in listed.json()["data"]}


async def _sentinel_next(served: Served, *clients: Listener) -> None:
    """Nothing else is queued for ``clients``: the next thing each gets is the sentinel."""
    await served.events.emit("sentinel", {"end": True})
    for client in clients:
        assert await client.next() == ("sentinel", {"end": True})


async def test_a_slots_room_sees_orders_as_the_public_listing_and_the_owner_sees_all(
    served: Served,
) -> None:
    api = served.api
    owner = await trader(api, "both")
    other = await trader(api, "import")
    slot = make_slot(api.database_url)
    async with (
        listening(served.url, _token(owner)) as mine,
        listening(served.url, _token(other)) as theirs,
    ):
        for client in (mine, theirs):
            assert (await client.call("join_timeslot", slot))["success"] is True

        bid = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "meterId": owner.meter_id, "quantityWh": 700, "price": 210},
            headers=owner.headers,
        )
        assert bid.status_code == 201, bid.text
        order = bid.json()["data"]
        amended = await api.client.put(
            f"/api/bids/{order['id']}",
            json={"version": order["version"], "price": 220},
            headers=owner.headers,
        )
        assert amended.status_code == 200, amended.text
        # One side per account and slot (self-trade prevention): the bid goes first.
        withdrawn = await api.client.delete(f"/api/bids/{order['id']}", headers=owner.headers)
        assert withdrawn.status_code == 200, withdrawn.text
        supply = await api.client.post(
            "/api/supplies",
            json={"timeslotId": slot, "meterId": owner.meter_id, "quantityWh": 300, "price": 90},
            headers=owner.headers,
        )
        assert supply.status_code == 201, supply.text
        cancelled = await api.client.delete(
            f"/api/supplies/{supply.json()['data']['id']}", headers=owner.headers
        )
        assert cancelled.status_code == 200, cancelled.text

        # Another participant in the room: every event is the order exactly as the
        # slot's public listing shows it to them (plus the action), nothing more.
        seen = [await theirs.next() for _ in range(5)]
        assert [(name, data["action"]) for name, data in seen] == [
            ("bid_update", "created"),
            ("bid_update", "updated"),
            ("bid_update", "cancelled"),
            ("supply_update", "created"),
            ("supply_update", "cancelled"),
        ]
        bids = await _public_listing(served, other, f"/api/timeslots/{slot}/bids")
        supplies = await _public_listing(served, other, f"/api/timeslots/{slot}/supplies")
        for _, data in seen:
            assert data["userId"] is None
            assert data["meterId"] is None
        latest = {"bid_update": seen[2][1], "supply_update": seen[4][1]}
        for name, listing in (("bid_update", bids), ("supply_update", supplies)):
            public = {k: v for k, v in latest[name].items() if k != "action"}
            assert public == listing[public["id"]]
        await _sentinel_next(served, theirs)

        # The owner: the public copy in the room, then the whole order on their own
        # room, each time, in that order.
        for name, action in (
            ("bid_update", "created"),
            ("bid_update", "updated"),
            ("bid_update", "cancelled"),
            ("supply_update", "created"),
            ("supply_update", "cancelled"),
        ):
            public = await mine.next()
            private = await mine.next()
            assert (public[0], public[1]["action"], public[1]["userId"]) == (name, action, None)
            assert private[0] == name
            assert private[1]["action"] == action
            assert (private[1]["userId"], private[1]["meterId"]) == (
                owner.user_id,
                owner.meter_id,
            )
            assert {k: v for k, v in private[1].items() if k not in ("userId", "meterId")} == {
                k: v for k, v in public[1].items() if k not in ("userId", "meterId")
            }
        await _sentinel_next(served, mine)


async def test_the_owner_gets_their_orders_without_following_the_slot(served: Served) -> None:
    api = served.api
    owner = await trader(api, "import")
    slot = make_slot(api.database_url)
    async with listening(served.url, _token(owner)) as mine:
        bid = await api.client.post(
            "/api/bids",
            json={"timeslotId": slot, "meterId": owner.meter_id, "quantityWh": 400, "price": 150},
            headers=owner.headers,
        )
        assert bid.status_code == 201, bid.text
        name, data = await mine.next()
        assert name == "bid_update"
        # The REST answer is the event plus the predecessor's nested copy (``bid``).
        answer = bid.json()["data"]
        assert answer.pop("bid")["id"] == data["id"]
        assert {k: v for k, v in data.items() if k != "action"} == answer
        assert data["action"] == "created"
        await _sentinel_next(served, mine)
