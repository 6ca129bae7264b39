"""The scheduler and the clearing service against a real PostgreSQL, with the market
clock accelerated: slots open, close, clear and announce themselves on their own; two
schedulers (and two ticks racing without the lock) clear each slot exactly once; a
scheduler that was down catches up; a slot's result is what the engine computes."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.triggers.interval import IntervalTrigger
from cloud.tests.market_support import RecordedEvents
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from gridclear.cloud.market import store
from gridclear.cloud.market.clearing import OrderBook, Side, clear
from gridclear.cloud.market.clock import MarketClock
from gridclear.cloud.market.config import MarketConfig, save_config
from gridclear.cloud.market.scheduler import MARKET_TICK_JOB, Scheduler
from gridclear.cloud.market.service import tick
from gridclear.cloud.market.timeslots import SlotState

# One market minute per slot, opening two minutes ahead, closing 10 s before delivery.
FAST = MarketConfig(slot_length_s=60, open_ahead_s=120, gate_closure_s=10, settlement_grace_s=30)
SPEED = 60.0  # a market minute per wall second


@pytest.fixture
async def conn(migrated_db: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    async with await AsyncConnection.connect(
        migrated_db, autocommit=True, row_factory=dict_row
    ) as connection:
        await connection.execute("TRUNCATE trades, orders, timeslots, market_clock CASCADE")
        await save_config(connection, FAST, user_id=None)
        yield connection


def _traders(url: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """A buyer and a seller, each with a meter: ((user, meter), (user, meter))."""
    with psycopg.connect(url, autocommit=True) as db:
        device = db.execute(
            "INSERT INTO devices (device_id) VALUES ('gw-' || gen_random_uuid()) RETURNING id"
        ).fetchone()
        assert device is not None
        out = []
        for role in ("import", "export"):
            user = db.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()
            assert user is not None
            meter = db.execute(
                "INSERT INTO meters (device_pk, name, owner_id, role)"
                " VALUES (%s, 'm-' || gen_random_uuid(), %s, %s) RETURNING id",
                (device[0], user[0], role),
            ).fetchone()
            assert meter is not None
            out.append((int(user[0]), int(meter[0])))
    return out[0], out[1]


async def _place_pair(conn: AsyncConnection[DictRow], url: str, slot_id: int) -> bool:
    """A 1500 Wh bid at 300 and a 1000 Wh offer at 100; False if the slot closed first."""
    (buyer, buy_meter), (seller, sell_meter) = _traders(url)
    async with conn.transaction():
        for side, user, meter, quantity, price in (
            (Side.BUY, buyer, buy_meter, 1500, 300),
            (Side.SELL, seller, sell_meter, 1000, 100),
        ):
            try:
                await store.place_order(
                    conn,
                    config=FAST,
                    user_id=user,
                    side=side,
                    timeslot_id=slot_id,
                    meter_id=meter,
                    quantity_wh=quantity,
                    price=price,
                )
            except store.SlotNotOpenError:
                # The accelerated gate closure came first (a slow machine): place none.
                raise _SlotClosedError from None
    return True


class _SlotClosedError(Exception):
    pass


async def _try_pair(conn: AsyncConnection[DictRow], url: str, slot_id: int) -> bool:
    try:
        return await _place_pair(conn, url, slot_id)
    except _SlotClosedError:
        return False


async def _tick_as_scheduler(conn: AsyncConnection[DictRow], now: datetime) -> None:
    """Tick at market time ``now`` as the scheduler does: the API then judges by it too."""
    await store.record_clock(conn, now=now, speed=1.0)
    await tick(conn, now)


async def _states(conn: AsyncConnection[DictRow]) -> dict[int, str]:
    cur = await conn.execute("SELECT id, state FROM timeslots ORDER BY starts_at")
    return {row["id"]: row["state"] for row in await cur.fetchall()}


async def _until(predicate: object, timeout_s: float = 30.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_accelerated_slots_open_close_clear_and_announce_on_their_own(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    events = RecordedEvents()
    scheduler = Scheduler(
        database_url=migrated_db,
        clock=MarketClock(speed=SPEED),
        events=events,
        interval_s=0.05,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:

        async def an_open_slot() -> bool:
            return "open" in (await _states(conn)).values()

        slot_id = 0
        while not slot_id:
            await _until(an_open_slot)
            open_ids = [i for i, s in (await _states(conn)).items() if s == "open"]
            # The latest opened has the most time left before its gate closure.
            if await _try_pair(conn, migrated_db, open_ids[-1]):
                slot_id = open_ids[-1]

        async def cleared() -> bool:
            return (await _states(conn))[slot_id] in ("cleared", "settling")

        await _until(cleared)
    finally:
        stop.set()
        await task

    slot = await store.get_slot(conn, slot_id)
    # 1500 Wh bid at 300 against 1000 Wh offered at 100: the bid is rationed, so the
    # price is its level's (DESIGN §8).
    assert (slot.price, slot.volume_wh) == (300, 1000)
    trades = await store.list_trades(conn, timeslot_id=slot_id)
    assert [(t["quantity_wh"], t["price"], t["amount"]) for t in trades] == [(1000, 300, 300)]
    states = [
        d["state"]
        for d, room, _ in events.named("timeslot_update")
        if d["id"] == slot_id and room is None
    ]
    assert states[:3] == ["open", "closed", "cleared"]
    cleared_event = next(
        d
        for d, room, _ in events.named("timeslot_update")
        if d["state"] == "cleared" and d["id"] == slot_id and room is None
    )
    assert cleared_event["result"]["price"] == 300
    notified = sorted(
        (d["side"], d["filledWh"], d["amount"]) for d, _, _ in events.named("user_notification")
    )
    assert notified == [("buy", 1000, 300), ("sell", 1000, 300)]
    assert all(d["type"] == "order_filled" for d, _, _ in events.named("user_notification"))


async def test_two_schedulers_and_racing_ticks_clear_each_slot_exactly_once(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    sinks = [RecordedEvents(), RecordedEvents()]
    schedulers = [
        Scheduler(
            database_url=migrated_db,
            clock=MarketClock(speed=SPEED),
            events=sink,
            interval_s=0.05,
        )
        for sink in sinks
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    try:

        async def two_open() -> bool:
            return list((await _states(conn)).values()).count("open") >= 2

        await _until(two_open)
        for slot_id, state in (await _states(conn)).items():
            if state == "open":
                await _try_pair(conn, migrated_db, slot_id)
        ordered = {
            row["timeslot_id"]
            for row in await (await conn.execute("SELECT timeslot_id FROM orders")).fetchall()
        }
        assert ordered

        async def all_cleared() -> bool:
            states = await _states(conn)
            return all(states[i] in ("cleared", "settling") for i in ordered)

        await _until(all_cleared)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    assert sorted(s.leader for s in schedulers) == [False, True]
    assert min(s.ticks for s in schedulers) == 0  # the standby never acted
    clearings = Counter(
        d["id"]
        for sink in sinks
        for d, room, _ in sink.named("timeslot_update")
        if d["state"] == "cleared" and room is None
    )
    assert all(clearings[i] == 1 for i in ordered), clearings

    # Without the lock, two ticks racing on one moment still act once per slot.
    late = datetime.now(UTC) + timedelta(hours=1)
    async with (
        await AsyncConnection.connect(migrated_db, autocommit=True, row_factory=dict_row) as a,
        await AsyncConnection.connect(migrated_db, autocommit=True, row_factory=dict_row) as b,
    ):
        reports = await asyncio.gather(tick(a, late), tick(b, late))
    moves = Counter(move for report in reports for move in report.moves)
    assert moves
    assert all(count == 1 for count in moves.values()), moves
    cur = await conn.execute(
        "SELECT timeslot_id, count(*) AS n FROM trades GROUP BY timeslot_id ORDER BY 1"
    )
    assert {row["timeslot_id"]: row["n"] for row in await cur.fetchall()} == dict.fromkeys(
        ordered, 1
    )


async def test_a_scheduler_that_was_down_catches_up_in_one_tick(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    await _tick_as_scheduler(conn, t0)
    states = await _states(conn)
    open_ids = [i for i, s in states.items() if s == "open"]
    scheduled = [i for i, s in states.items() if s == "scheduled"]
    assert open_ids
    assert scheduled
    assert await _try_pair(conn, migrated_db, open_ids[0])

    report = await tick(conn, t0 + timedelta(hours=2))
    after = await _states(conn)
    assert all(after[i] == "settling" for i in open_ids)
    assert all(after[i] == "cancelled" for i in scheduled)
    assert report.created > 0  # and the slots now due exist again
    assert sum(1 for s in after.values() if s == "open") == 2
    assert (await tick(conn, t0 + timedelta(hours=2))).moves == []  # nothing left to do


async def test_the_stored_result_is_the_engines_result_for_the_slots_book(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    await _tick_as_scheduler(conn, t0)
    slot_id = next(i for i, s in (await _states(conn)).items() if s == "open")
    rng = np.random.default_rng(7)
    for _ in range(30):
        (buyer, buy_meter), (seller, sell_meter) = _traders(migrated_db)
        for side, user, meter in ((Side.BUY, buyer, buy_meter), (Side.SELL, seller, sell_meter)):
            await store.place_order(
                conn,
                config=FAST,
                user_id=user,
                side=side,
                timeslot_id=slot_id,
                meter_id=meter,
                quantity_wh=int(rng.integers(1, 50)) * 100,
                price=int(rng.integers(50, 150)),
            )
    cur = await conn.execute(
        "SELECT id, side, quantity_wh, price,"
        " floor(extract(epoch FROM submitted_at) * 1000)::bigint AS ms"
        " FROM orders WHERE timeslot_id = %s ORDER BY id",
        (slot_id,),
    )
    rows = await cur.fetchall()
    expected = clear(
        OrderBook.from_arrays(
            ids=[r["id"] for r in rows],
            is_buy=[r["side"] == "buy" for r in rows],
            quantity_wh=[r["quantity_wh"] for r in rows],
            price=[r["price"] for r in rows],
            submitted_at=[r["ms"] for r in rows],
        ),
        price_floor=FAST.price_floor,
        price_cap=FAST.price_cap,
    )
    await tick(conn, t0 + timedelta(minutes=2))
    slot = await store.get_slot(conn, slot_id)
    assert slot.state is SlotState.CLEARED
    assert (slot.price, slot.volume_wh, slot.total_amount) == (
        expected.price,
        expected.volume_wh,
        expected.total_amount,
    )
    cur = await conn.execute(
        "SELECT filled_wh, amount FROM orders WHERE timeslot_id = %s ORDER BY id", (slot_id,)
    )
    stored = await cur.fetchall()
    assert [r["filled_wh"] for r in stored] == expected.filled_wh.tolist()
    assert [r["amount"] for r in stored] == expected.amount.tolist()
    trades = await store.list_trades(conn, timeslot_id=slot_id, limit=10_000)
    assert [t["quantity_wh"] for t in trades] == expected.trade_quantity_wh.tolist()
    assert sum(t["amount"] for t in trades) == expected.total_amount


async def test_a_slot_that_cannot_clear_stays_closed_and_holds_up_no_other(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    await _tick_as_scheduler(conn, t0)
    first, second = [i for i, s in (await _states(conn)).items() if s == "open"][:2]
    assert await _try_pair(conn, migrated_db, first)
    assert await _try_pair(conn, migrated_db, second)
    # A row the API would never have accepted: a price above the slot's cap.
    await conn.execute(
        "UPDATE orders SET price = 10 * (SELECT price_cap FROM timeslots WHERE id = %s)"
        " WHERE timeslot_id = %s AND side = 'buy'",
        (first, first),
    )
    report = await tick(conn, t0 + timedelta(minutes=3))
    states = await _states(conn)
    assert report.failed == [first]
    assert states[first] == "closed"
    assert states[second] == "cleared"
    cur = await conn.execute("SELECT count(*) AS n FROM trades WHERE timeslot_id = %s", (first,))
    assert (await cur.fetchone()) == {"n": 0}


async def test_changing_the_slot_length_never_makes_delivery_intervals_overlap(
    conn: AsyncConnection[DictRow],
) -> None:
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    for length, at in (
        (120, t0),
        (60, t0 + timedelta(seconds=30)),
        (240, t0 + timedelta(minutes=10)),
    ):
        await save_config(conn, FAST.updated(slot_length_s=length, open_ahead_s=600), user_id=None)
        await tick(conn, at)
    cur = await conn.execute("SELECT starts_at, ends_at FROM timeslots ORDER BY starts_at")
    spans = [(row["starts_at"], row["ends_at"]) for row in await cur.fetchall()]
    assert len(spans) > 5
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    assert {int((end - start).total_seconds()) for start, end in spans} == {120, 240}


async def test_the_tick_runs_as_an_apscheduler_interval_job(
    conn: AsyncConnection[DictRow], migrated_db: str
) -> None:
    scheduler = Scheduler(database_url=migrated_db, clock=MarketClock(speed=SPEED), interval_s=0.05)
    executed: list[JobExecutionEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:

        async def running() -> bool:
            return scheduler.apscheduler is not None

        await _until(running)
        aps = scheduler.apscheduler
        assert aps is not None
        aps.add_listener(executed.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

        async def ran_twice() -> bool:
            return len(executed) >= 2

        await _until(ran_twice)
        job = aps.get_job(MARKET_TICK_JOB)
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.trigger.interval == timedelta(seconds=0.05)
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        assert [j.id for j in aps.get_jobs()] == [MARKET_TICK_JOB]
    finally:
        stop.set()
        await task
    assert {e.job_id for e in executed} == {MARKET_TICK_JOB}
    assert all(e.exception is None for e in executed)
    assert scheduler.ticks >= 2
    assert scheduler.apscheduler is None  # shut down with run()
    # Each run recorded the market clock before acting (the API judges gate closure by it).
    cur = await conn.execute("SELECT speed FROM market_clock")
    assert [row["speed"] for row in await cur.fetchall()] == [SPEED]


async def test_a_standby_scheduler_takes_over_when_the_acting_one_stops(
    conn: AsyncConnection[DictRow], migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gridclear.cloud.market.scheduler")
    first, second = (
        Scheduler(database_url=migrated_db, clock=MarketClock(speed=SPEED), interval_s=0.05)
        for _ in range(2)
    )
    stops = asyncio.Event(), asyncio.Event()
    # The second starts only once the first holds the lock: started together, either may win.
    tasks = [asyncio.create_task(first.run(stops[0]))]
    try:

        async def first_acts() -> bool:
            return first.leader and first.ticks > 0

        await _until(first_acts)
        tasks.append(asyncio.create_task(second.run(stops[1])))

        async def second_stands_by() -> bool:
            return any("standing by" in r.getMessage() for r in caplog.records)

        await _until(second_stands_by)
        assert second.ticks == 0
        stops[0].set()
        await tasks[0]

        async def second_acts() -> bool:
            return second.leader and second.ticks > 0

        await _until(second_acts)
        before = await _states(conn)

        async def slots_move_on() -> bool:
            return await _states(conn) != before

        await _until(slots_move_on)  # the market goes on under the new leader
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
    said = [
        r.getMessage().split(":")[0]
        for r in caplog.records
        if r.name == "gridclear.cloud.market.scheduler" and "tick" not in r.getMessage()
    ]
    assert said == [
        "scheduler holds the market lock and acts",
        "scheduler standing by",
        "scheduler takes over",
    ]
