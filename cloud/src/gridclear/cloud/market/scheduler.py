"""``gridclear-cloud scheduler``: opens, closes, clears and hands over slots on time.

The periodic jobs run on APScheduler 3 (``AsyncIOScheduler``), one interval job per
:class:`PeriodicJob`: the market tick now; settlement and reconciliation join the
same way (:meth:`Scheduler.jobs`). Every job is coalesced (runs missed while the
process was stalled collapse into one), never runs twice at once
(``max_instances=1``) and runs however late it is (no misfire grace): a job's
correctness comes from the stored states, not from its run times, so a late run
is a catch-up, never a duplicate. A tick that finds slots whose times have passed
moves each as far as it should be, oldest first (see :mod:`.service`).

One scheduler acts at a time: each holds a dedicated PostgreSQL connection and
tries ``pg_try_advisory_lock`` on it before every job run. The one that holds the
lock runs the jobs on that connection, one at a time; the others stand by, say so
once, and take over within one interval when it stops (the lock dies with its
connection), saying that too. Even without the lock, two ticks never double-act
(see :mod:`.service`), so the lock saves work rather than guarding correctness.
The connection is this module's, not APScheduler's: it is opened on the first
run, and dropped and opened again after a database failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from gridclear.cloud.ledger.client import LedgerUnavailableError
from gridclear.cloud.market.clock import MarketClock
from gridclear.cloud.market.events import EventSink, safe_emit, slot_json
from gridclear.cloud.market.metrics import SchedulerMetrics
from gridclear.cloud.market.service import TickReport, tick
from gridclear.cloud.market.store import count_slots_by_state, get_slot, record_clock
from gridclear.cloud.market.timeslots import SlotState
from gridclear.cloud.settlement.service import SettlementService

__all__ = [
    "MARKET_TICK_JOB",
    "RECONCILIATION_JOB",
    "SCHEDULER_LOCK_KEY",
    "SETTLEMENT_JOB",
    "PeriodicJob",
    "Scheduler",
]

log = logging.getLogger(__name__)

SCHEDULER_LOCK_KEY = 0x67726964_7363_6864  # "gridschd": no other gridclear lock uses it

MARKET_TICK_JOB = "market_tick"
"""The APScheduler job id of the market tick."""
SETTLEMENT_JOB = "settlement"
"""The APScheduler job id of a settlement pass (when settlement is configured)."""
RECONCILIATION_JOB = "reconciliation"
"""The APScheduler job id of a reconciliation (when settlement is configured)."""


@dataclass(frozen=True)
class PeriodicJob:
    """Work the acting scheduler runs every ``every_s`` wall seconds.

    ``run`` receives the connection that holds the scheduler lock (autocommit, dict
    rows). Jobs share it one at a time, so a job must leave no transaction open.
    """

    id: str
    every_s: float
    run: Callable[[AsyncConnection[DictRow]], Awaitable[None]]


@dataclass
class Scheduler:
    """Runs :meth:`jobs` on APScheduler while it holds the scheduler lock.

    ``ticks`` counts the market ticks this scheduler ran (it holds the lock for
    each); ``leader`` says whether it held the lock at its last attempt.
    """

    database_url: str
    clock: MarketClock
    events: EventSink | None = None
    interval_s: float = 1.0
    settlement: SettlementService | None = None
    """Settles and reconciles when given (GRIDCLEAR_SOLANA_RPC_URL and the key files set)."""
    reconcile_every_s: float = 60.0
    metrics: SchedulerMetrics | None = None
    """Updated when given (``gridclear-cloud scheduler --metrics-port``)."""
    ticks: int = 0
    leader: bool = False
    _conn: AsyncConnection[DictRow] | None = field(default=None, init=False, repr=False)
    _one_at_a_time: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _standing_by: bool = field(default=False, init=False, repr=False)
    _in_flight: set[asyncio.Task[object]] = field(default_factory=set, init=False, repr=False)
    _apscheduler: AsyncIOScheduler | None = field(default=None, init=False, repr=False)

    def jobs(self) -> list[PeriodicJob]:
        """The periodic jobs, each an APScheduler interval job of the same id."""
        jobs = [PeriodicJob(id=MARKET_TICK_JOB, every_s=self.interval_s, run=self._market_tick)]
        if self.settlement is not None:
            jobs.append(PeriodicJob(id=SETTLEMENT_JOB, every_s=self.interval_s, run=self._settle))
            jobs.append(
                PeriodicJob(
                    id=RECONCILIATION_JOB, every_s=self.reconcile_every_s, run=self._reconcile
                )
            )
        return jobs

    @property
    def apscheduler(self) -> AsyncIOScheduler | None:
        """The APScheduler instance while :meth:`run` runs (None before and after)."""
        return self._apscheduler

    async def run(self, stop: asyncio.Event) -> None:
        """Run the jobs until ``stop`` is set; reconnects after a database failure.

        On ``stop`` no job starts again, the jobs running finish, and the lock's
        connection closes, which hands the lock to a standby.
        """
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        now = datetime.now(UTC)
        for job in self.jobs():
            scheduler.add_job(
                self._as_leader,
                IntervalTrigger(seconds=job.every_s, timezone=UTC),
                args=(job,),
                id=job.id,
                name=job.id,
                next_run_time=now,  # the first run at once, not one interval later
            )
        scheduler.start()
        self._apscheduler = scheduler
        try:
            await stop.wait()
        finally:
            scheduler.pause()
            # Let the runs under way finish (APScheduler's shutdown would cancel them).
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            scheduler.shutdown(wait=False)
            self._apscheduler = None
            await self._close()

    async def tick_once(self, conn: AsyncConnection[DictRow]) -> TickReport:
        """One market tick at the clock's time, recorded first; counts it in ``ticks``."""
        now = self.clock.now()
        # The API judges gate closure by this clock: record it before acting on it.
        await record_clock(conn, now=now, speed=self.clock.speed)
        report = await tick(conn, now, events=self.events)
        self.ticks += 1
        return report

    async def _market_tick(self, conn: AsyncConnection[DictRow]) -> None:
        report = await self.tick_once(conn)
        if self.metrics is not None:
            await self._count_tick(conn, report, self.metrics)
        if report.created or report.moves:
            log.info(
                "scheduler tick: %d slots created; %s",
                report.created,
                ", ".join(f"slot {i} {s.value}" for i, s in report.moves) or "no moves",
            )

    async def _count_tick(
        self, conn: AsyncConnection[DictRow], report: TickReport, metrics: SchedulerMetrics
    ) -> None:
        metrics.ticks.inc()
        metrics.last_tick.set(time.time())
        metrics.slot_failures.inc(len(report.failed))
        for slot_id, state in report.moves:
            metrics.transitions.labels(state.value).inc()
            if state is SlotState.CLEARED:
                slot = await get_slot(conn, slot_id)
                if slot.price is not None:
                    metrics.clearing_price.set(slot.price)
                metrics.cleared_energy.inc(slot.volume_wh or 0)
                metrics.cleared_amount.inc(slot.total_amount or 0)
                metrics.last_cleared_volume.set(slot.volume_wh or 0)
        for state, count in (await count_slots_by_state(conn)).items():
            metrics.slots.labels(state.value).set(count)

    async def _settle(self, conn: AsyncConnection[DictRow]) -> None:
        assert self.settlement is not None
        try:
            report = await self.settlement.settle(conn)
        except LedgerUnavailableError as exc:
            # Nothing is decided on a failed call: the next pass resumes where this stopped.
            log.warning("settlement waits for the ledger: %s", exc)
            self._count_failure(SETTLEMENT_JOB, "ledger")
            return
        if report is None:
            return
        for slot_id in report.settled_slots:
            slot = await get_slot(conn, slot_id)
            await safe_emit(self.events, "timeslot_update", slot_json(slot))
            for user_id in sorted(report.notified_users.get(slot_id, ())):
                await safe_emit(
                    self.events,
                    "user_notification",
                    {"type": "settled", "timeslotId": slot_id},
                    user_id=user_id,
                )

    async def _reconcile(self, conn: AsyncConnection[DictRow]) -> None:
        assert self.settlement is not None
        try:
            await self.settlement.reconcile(conn)
        except LedgerUnavailableError as exc:
            log.warning("reconciliation waits for the ledger: %s", exc)
            self._count_failure(RECONCILIATION_JOB, "ledger")

    def _count_failure(self, job: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.job_failures.labels(job, reason).inc()

    async def _as_leader(self, job: PeriodicJob) -> None:
        """APScheduler's entry point: ``job`` runs if this scheduler holds the lock."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            async with self._one_at_a_time:
                conn = await self._lead()
                if self.metrics is not None:
                    self.metrics.leader.set(1 if self.leader else 0)
                if conn is not None:
                    started = time.perf_counter()
                    await job.run(conn)
                    if self.metrics is not None:
                        elapsed = time.perf_counter() - started
                        self.metrics.job_seconds.labels(job.id).observe(elapsed)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # The lock died with the connection: after reconnecting, act or stand by anew.
            self.leader = False
            self._standing_by = False
            log.warning("scheduler lost the database (%s); retrying", exc)
            self._count_failure(job.id, "database")
            if self.metrics is not None:
                self.metrics.leader.set(0)
            await self._close()
        except Exception:
            # APScheduler logs it with its traceback; the next run tries again.
            self._count_failure(job.id, "error")
            raise
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _lead(self) -> AsyncConnection[DictRow] | None:
        """The lock's connection if this scheduler holds the lock (taking it if free)."""
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(
                self.database_url, autocommit=True, row_factory=dict_row
            )
            self.leader = False
        if self.leader:
            return self._conn
        cur = await self._conn.execute(
            "SELECT pg_try_advisory_lock(%s) AS got", (SCHEDULER_LOCK_KEY,)
        )
        row = await cur.fetchone()
        self.leader = bool(row and row["got"])
        if self.leader:
            if self._standing_by:
                log.info(
                    "scheduler takes over: the acting scheduler stopped; "
                    "this one now holds the market lock and acts"
                )
            else:
                log.info("scheduler holds the market lock and acts")
            self._standing_by = False
            return self._conn
        if not self._standing_by:
            log.info(
                "scheduler standing by: another scheduler holds the market lock; "
                "this one takes over within %g s when that one stops",
                self.interval_s,
            )
            self._standing_by = True
        return None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
