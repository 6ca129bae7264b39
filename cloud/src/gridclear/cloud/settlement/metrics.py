"""Prometheus metrics of settlement and reconciliation (in the process's registry).

The scheduler exposes them; ``gridclear-cloud ledger settle|reconcile`` update
them too, for whoever scrapes that process.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from gridclear.cloud.settlement.engine import SettlementReport
from gridclear.cloud.settlement.reconcile import ReconcileReport

__all__ = ["SettlementMetrics"]


class SettlementMetrics:
    """Transactions and trades by outcome, slots settled, and the last reconciliation."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.transactions = Counter(
            "gridclear_settlement_transactions",
            "Settlement transactions by what happened (sent, landed, expired, rebroadcast)",
            ["outcome"],
            registry=registry,
        )
        self.trades = Counter(
            "gridclear_settlement_trades",
            "Trades that reached a final settlement state (settled, failed)",
            ["state"],
            registry=registry,
        )
        self.slots = Counter(
            "gridclear_settlement_slots_settled", "Slots moved to settled", registry=registry
        )
        self.differences = Gauge(
            "gridclear_reconciliation_differences",
            "Differences the last reconciliation found between the ledger and the database",
            registry=registry,
        )
        self.checks = Gauge(
            "gridclear_reconciliation_checks",
            "Checks the last reconciliation made",
            registry=registry,
        )
        self.reconciled_at = Gauge(
            "gridclear_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation finished (Unix time)",
            registry=registry,
        )

    def settled(self, report: SettlementReport) -> None:
        for outcome, count in (
            ("sent", report.sent),
            ("landed", report.landed),
            ("expired", report.expired),
            ("rebroadcast", report.rebroadcast),
        ):
            if count:
                self.transactions.labels(outcome).inc(count)
        if report.trades_settled:
            self.trades.labels("settled").inc(report.trades_settled)
        if report.trades_failed:
            self.trades.labels("failed").inc(report.trades_failed)
        if report.settled_slots:
            self.slots.inc(len(report.settled_slots))

    def reconciled(self, report: ReconcileReport) -> None:
        self.differences.set(len(report.differences))
        self.checks.set(report.checked)
        self.reconciled_at.set_to_current_time()
