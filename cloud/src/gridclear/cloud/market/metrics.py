"""Prometheus metrics of the market: its order API (in the app's own registry) and its scheduler."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["MarketMetrics", "SchedulerMetrics"]


class MarketMetrics:
    """Orders by side and action, and refusals by side and stable reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.orders = Counter(
            "gridclear_market_orders",
            "Orders placed, amended, cancelled, and idempotent retries answered",
            ["side", "action"],
            registry=registry,
        )
        self.refusals = Counter(
            "gridclear_market_order_refusals",
            "Order requests refused, by reason (slot_not_open, meter_not_allowed, ...)",
            ["side", "reason"],
            registry=registry,
        )


class SchedulerMetrics:
    """What the scheduler process reports (``gridclear-cloud scheduler --metrics-port``).

    Only the acting scheduler (the holder of the market lock) updates the market's
    figures; a standby reports ``gridclear_scheduler_leader 0`` and nothing else new,
    so a dashboard sums or takes the maximum over the schedulers. ``slots`` is set
    from the table after each tick, so it is right even after a restart.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.leader = Gauge(
            "gridclear_scheduler_leader",
            "1 while this scheduler holds the market lock and acts, 0 while it stands by",
            registry=r,
        )
        self.ticks = Counter(
            "gridclear_scheduler_ticks", "Market ticks run by this scheduler", registry=r
        )
        self.last_tick = Gauge(
            "gridclear_scheduler_last_tick_timestamp_seconds",
            "Wall-clock time (Unix seconds) of this scheduler's last completed market tick",
            registry=r,
        )
        self.job_seconds = Histogram(
            "gridclear_scheduler_job_seconds",
            "Time a periodic job took when this scheduler ran it, by job",
            ("job",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.job_failures = Counter(
            "gridclear_scheduler_job_failures",
            "Job runs that failed, by job and reason (database, ledger, error)",
            ("job", "reason"),
            registry=r,
        )
        self.slots = Gauge(
            "gridclear_market_slots",
            "Delivery slots by state (scheduled, open, closed, cleared, settling, settled,"
            " cancelled)",
            ("state",),
            registry=r,
        )
        self.transitions = Counter(
            "gridclear_market_slot_transitions",
            "Slot state changes made by the scheduler, by the state reached",
            ("state",),
            registry=r,
        )
        self.slot_failures = Counter(
            "gridclear_market_slot_failures",
            "Slots that could not move on a tick (retried on the next one)",
            registry=r,
        )
        self.clearing_price = Gauge(
            "gridclear_market_clearing_price",
            "Uniform price of the last slot cleared, in payment-token base units per kWh",
            registry=r,
        )
        self.cleared_energy = Counter(
            "gridclear_market_cleared_energy_wh",
            "Energy traded in cleared slots, in Wh",
            registry=r,
        )
        self.cleared_amount = Counter(
            "gridclear_market_cleared_amount",
            "Payment owed for energy traded in cleared slots, in payment-token base units",
            registry=r,
        )
        self.last_cleared_volume = Gauge(
            "gridclear_market_last_cleared_volume_wh",
            "Energy traded in the last slot cleared, in Wh",
            registry=r,
        )
