"""Settlement's metrics count what each pass and reconciliation reports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gridclear.cloud.settlement.engine import SettlementReport
from gridclear.cloud.settlement.metrics import SettlementMetrics
from gridclear.cloud.settlement.reconcile import Difference, ReconcileReport


def _value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    found = registry.get_sample_value(name, labels or {})
    assert found is not None, name
    return found


def test_passes_and_reconciliations_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = SettlementMetrics(registry)
    metrics.settled(
        SettlementReport(
            sent=3, landed=2, expired=1, trades_settled=7, trades_failed=1, settled_slots=[4, 5]
        )
    )
    metrics.settled(SettlementReport(sent=1, rebroadcast=2, trades_settled=1))
    assert _value(registry, "gridclear_settlement_transactions_total", {"outcome": "sent"}) == 4
    assert _value(registry, "gridclear_settlement_transactions_total", {"outcome": "expired"}) == 1
    assert (
        _value(registry, "gridclear_settlement_transactions_total", {"outcome": "rebroadcast"}) == 2
    )
    assert _value(registry, "gridclear_settlement_trades_total", {"state": "settled"}) == 8
    assert _value(registry, "gridclear_settlement_trades_total", {"state": "failed"}) == 1
    assert _value(registry, "gridclear_settlement_slots_settled_total") == 2

    metrics.reconciled(
        ReconcileReport(checked=12, differences=[Difference("energy_balance", "w", 1, 0)])
    )
    assert _value(registry, "gridclear_reconciliation_differences") == 1
    assert _value(registry, "gridclear_reconciliation_checks") == 12
    metrics.reconciled(ReconcileReport(checked=13))
    assert _value(registry, "gridclear_reconciliation_differences") == 0
    assert _value(registry, "gridclear_reconciliation_last_run_timestamp_seconds") > 0
