"""Prometheus metrics of the market's order API (in the app's own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["MarketMetrics"]


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
