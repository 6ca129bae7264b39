"""Gate closure is judged by the market's clock on every order change, whatever a
slot's stored state says: a slot past its ``closesAt`` that the scheduler has not
closed yet (it lags, or is down) takes no order, amendment or cancellation, and the
scheduler's catch-up then clears no trade from it. The market's clock is the
scheduler's (accelerated or started at another epoch for demos), read by the API
from the database. Through the real app, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from cloud.tests.api_support import Api, error_code
from cloud.tests.market_support import trader
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import Side
from gridclear.cloud.market.clock import MarketClock
from gridclear.cloud.market.config import MarketConfig
from gridclear.cloud.market.scheduler import Scheduler
from gridclear.cloud.market.service import tick


@pytest.fixture
async def conn(migrated_db: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    """A connection to the module's database, whose market clock is the wall clock."""
    async with await AsyncConnection.connect(
        migrated_db, autocommit=True, row_factory=dict_row
    ) as connection:
        await connection.execute("DELETE FROM market_clock")
        yield connection
        await connection.execute("DELETE FROM market_clock")


def _slot(url: str, *, closes_at: datetime, state: str = "open") -> int:
    """A slot whose gate closes at ``closes_at`` (delivery 5 minutes later), in ``state``."""
    start = closes_at + timedelta(minutes=5)
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at, state,"
            " price_floor, price_cap) VALUES (%s, %s, %s, %s, %s, %s, 0, 1000000) RETURNING id",
            (
                start,
                start + timedelta(minutes=15),
                start - timedelta(hours=2),
                closes_at,
                start + timedelta(minutes=30),
                state,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _order(url: str, slot_id: int, user_id: int, meter_id: int, side: str) -> int:
    """An order accepted before the gate closed (written directly)."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "INSERT INTO orders (timeslot_id, user_id, meter_id, side, quantity_wh, price)"
            " VALUES (%s, %s, %s, %s, 1000, 200) RETURNING id",
            (slot_id, user_id, meter_id, side),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_lagging_slot_past_gate_closure_takes_no_order_change_and_clears_no_trade(
    api: Api, conn: AsyncConnection[DictRow]
) -> None:
    buyer = await trader(api, "import")
    seller = await trader(api, "export")
    # An hour past gate closure, delivery over, and still open: the scheduler lags.
    now = datetime.now(UTC)
    slot = _slot(api.database_url, closes_at=now - timedelta(hours=1))
    earlier = _order(api.database_url, slot, buyer.user_id, buyer.meter_id, "buy")

    active = await api.client.get("/api/timeslots/active", headers=buyer.headers)
    assert slot not in [s["id"] for s in active.json()["data"]]

    bid = {"timeslotId": slot, "meterId": buyer.meter_id, "quantityWh": 900, "price": 400}
    offer = {"timeslotId": slot, "meterId": seller.meter_id, "quantityWh": 900, "price": 100}
    refused = [
        await api.client.post("/api/bids", json=bid, headers=buyer.headers),
        await api.client.post("/api/supplies", json=offer, headers=seller.headers),
        await api.client.post(
            "/api/supplies", json=offer, headers={**seller.headers, "Idempotency-Key": "late-1"}
        ),
        await api.client.put(
            f"/api/bids/{earlier}", json={"version": 1, "price": 500}, headers=buyer.headers
        ),
        await api.client.delete(f"/api/bids/{earlier}", headers=buyer.headers),
    ]
    # Placements arriving together share one statement: it refuses them too.
    refused += await asyncio.gather(
        *(api.client.post("/api/supplies", json=offer, headers=seller.headers) for _ in range(5))
    )
    for response in refused:
        assert (response.status_code, error_code(response)) == (409, "TIMESLOT_EXPIRED"), (
            response.text
        )
        assert response.json()["error"]["details"]["reason"] == "slot_not_open"
    cur = await conn.execute(
        "SELECT id, price, status, version FROM orders WHERE timeslot_id = %s", (slot,)
    )
    assert await cur.fetchall() == [{"id": earlier, "price": 200, "status": "active", "version": 1}]

    # The exact path (one order at a time) refuses as well.
    with pytest.raises(store.SlotNotOpenError):
        await store.place_order(
            conn,
            config=MarketConfig(),
            user_id=seller.user_id,
            side=Side.SELL,
            timeslot_id=slot,
            meter_id=seller.meter_id,
            quantity_wh=900,
            price=100,
        )

    # The scheduler catches up: the slot closes and clears with nothing traded.
    await tick(conn, datetime.now(UTC))
    cleared = await store.get_slot(conn, slot)
    assert cleared.state.value in ("cleared", "settling")
    assert (cleared.volume_wh, cleared.price) == (0, None)
    assert await store.list_trades(conn, timeslot_id=slot) == []


async def test_gate_closure_follows_the_schedulers_market_clock(
    api: Api, conn: AsyncConnection[DictRow]
) -> None:
    buyer = await trader(api, "import")
    now = datetime.now(UTC)

    # A demo market started two days back (--epoch): its slots close in the wall
    # clock's past, yet are before their gate in market time, and take orders.
    behind = Scheduler(
        database_url=api.database_url,
        clock=MarketClock(speed=1.0, epoch0=now - timedelta(days=2)),
    )
    await behind.tick_once(conn)
    demo_slot = _slot(api.database_url, closes_at=now - timedelta(days=2) + timedelta(minutes=30))
    placed = await api.client.post(
        "/api/bids",
        json={"timeslotId": demo_slot, "meterId": buyer.meter_id, "quantityWh": 500, "price": 1},
        headers=buyer.headers,
    )
    assert placed.status_code == 201, placed.text

    # An accelerated market (x60) that has run ahead: a slot whose gate is still
    # ahead on the wall clock has closed in market time, though not yet ticked.
    ahead = Scheduler(
        database_url=api.database_url,
        clock=MarketClock(speed=60.0, epoch0=now + timedelta(hours=3)),
    )
    await ahead.tick_once(conn)
    passed = _slot(api.database_url, closes_at=now + timedelta(hours=1))
    late = await api.client.post(
        "/api/bids",
        json={"timeslotId": passed, "meterId": buyer.meter_id, "quantityWh": 500, "price": 1},
        headers=buyer.headers,
    )
    assert (late.status_code, error_code(late)) == (409, "TIMESLOT_EXPIRED"), late.text
