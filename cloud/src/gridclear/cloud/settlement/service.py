"""Settlement as a process runs it: the keys, the ledger, one pass at a time.

The scheduler (``gridclear-cloud scheduler``) runs :meth:`SettlementService.settle`
and :meth:`SettlementService.reconcile` as periodic jobs while it holds the
market lock; ``gridclear-cloud ledger settle`` and ``ledger reconcile`` run them
by hand. Until ``ledger init`` has recorded the mints, both do nothing and say
so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.keypair import Keypair

from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.settlement import store
from gridclear.cloud.settlement.engine import FaultPoint, SettlementReport, Settler
from gridclear.cloud.settlement.metrics import SettlementMetrics
from gridclear.cloud.settlement.onboarding import resolve_approvals
from gridclear.cloud.settlement.reconcile import ReconcileReport, reconcile
from gridclear.cloud.settlement.store import LedgerSetup

__all__ = ["SettlementService"]

log = logging.getLogger(__name__)


@dataclass
class SettlementService:
    """Settles and reconciles on ``ledger`` with the service keys."""

    ledger: LedgerClient
    oracle: Keypair
    authority: Keypair
    fault: FaultPoint | None = None
    metrics: SettlementMetrics | None = None
    _setup: LedgerSetup | None = field(default=None, init=False, repr=False)
    _settler: Settler | None = field(default=None, init=False, repr=False)
    _said_not_set_up: bool = field(default=False, init=False, repr=False)

    async def setup(self, conn: AsyncConnection[DictRow]) -> LedgerSetup | None:
        """The ledger setup, read once it exists (it never changes afterwards)."""
        if self._setup is None:
            self._setup = await store.load_setup(conn)
            if self._setup is None and not self._said_not_set_up:
                log.warning(
                    "settlement waits: the ledger is not set up (gridclear-cloud ledger init)"
                )
                self._said_not_set_up = True
        return self._setup

    async def settle(self, conn: AsyncConnection[DictRow]) -> SettlementReport | None:
        """One settlement pass (None before ``ledger init``)."""
        setup = await self.setup(conn)
        if setup is None:
            return None
        if self._settler is None:
            self._settler = Settler(
                self.ledger,
                setup,
                oracle=self.oracle,
                authority=self.authority,
                fault=self.fault,
            )
        await resolve_approvals(conn, self.ledger)
        report = await self._settler.run_once(conn)
        if self.metrics is not None:
            self.metrics.settled(report)
        if report.sent or report.settled_slots or report.expired:
            log.info(
                "settlement pass: %d transactions sent, %d landed, %d expired, %d rebroadcast;"
                " %d trades settled, %d failed; slots settled: %s",
                report.sent,
                report.landed,
                report.expired,
                report.rebroadcast,
                report.trades_settled,
                report.trades_failed,
                ", ".join(map(str, report.settled_slots)) or "none",
            )
        return report

    async def reconcile(self, conn: AsyncConnection[DictRow]) -> ReconcileReport | None:
        """One reconciliation (None before ``ledger init``)."""
        setup = await self.setup(conn)
        if setup is None:
            return None
        report = await reconcile(conn, self.ledger, setup)
        if self.metrics is not None:
            self.metrics.reconciled(report)
        return report
