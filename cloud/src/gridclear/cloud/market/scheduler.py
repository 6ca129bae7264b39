"""``gridclear-cloud scheduler``: opens, closes, clears and hands over slots on time.

One scheduler acts at a time: each holds a dedicated PostgreSQL connection and
tries ``pg_try_advisory_lock`` on it before every tick. The one that holds the lock
ticks; the others stand by and take over within one interval when it stops (the
lock dies with its connection). Even without the lock, two ticks never double-act
(see :mod:`.service`), so the lock saves work rather than guarding correctness.

Why a plain asyncio loop rather than APScheduler: there is one periodic job, and
its correctness comes from the slots' stored states, not from run times: a
scheduler that was down simply finds slots whose times have passed and moves them
along in order. APScheduler's misfire handling and job stores would add a second,
conflicting notion of "missed", and the lock must live on one connection the loop
owns and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from gridclear.cloud.market.clock import MarketClock
from gridclear.cloud.market.events import EventSink
from gridclear.cloud.market.service import TickReport, tick
from gridclear.cloud.market.store import record_clock

__all__ = ["SCHEDULER_LOCK_KEY", "Scheduler"]

log = logging.getLogger(__name__)

SCHEDULER_LOCK_KEY = 0x67726964_7363_6864  # "gridschd": no other gridclear lock uses it


@dataclass
class Scheduler:
    """Runs :func:`~gridclear.cloud.market.service.tick` every ``interval_s`` wall seconds.

    ``ticks`` counts the ticks this scheduler ran (it holds the lock for each).
    """

    database_url: str
    clock: MarketClock
    events: EventSink | None = None
    interval_s: float = 1.0
    ticks: int = 0
    leader: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; reconnects after a database failure."""
        while not stop.is_set():
            try:
                await self._run_connected(stop)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.leader = False
                log.warning("scheduler lost the database (%s); retrying", exc)
                await _wait(stop, self.interval_s)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        conn: AsyncConnection[DictRow] = await AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=dict_row
        )
        async with conn:
            while not stop.is_set():
                if await self._hold_lock(conn):
                    report = await self.tick_once(conn)
                    if report.created or report.moves:
                        log.info(
                            "scheduler tick: %d slots created; %s",
                            report.created,
                            ", ".join(f"slot {i} {s.value}" for i, s in report.moves) or "no moves",
                        )
                await _wait(stop, self.interval_s)

    async def _hold_lock(self, conn: AsyncConnection[DictRow]) -> bool:
        if self.leader:
            return True
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (SCHEDULER_LOCK_KEY,))
        row = await cur.fetchone()
        self.leader = bool(row and row["got"])
        if self.leader:
            log.info("scheduler holds the market lock and acts")
        return self.leader

    async def tick_once(self, conn: AsyncConnection[DictRow]) -> TickReport:
        now = self.clock.now()
        # The API judges gate closure by this clock: record it before acting on it.
        await record_clock(conn, now=now, speed=self.clock.speed)
        report = await tick(conn, now, events=self.events)
        self.ticks += 1
        return report


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
