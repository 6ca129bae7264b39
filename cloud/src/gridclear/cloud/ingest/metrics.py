"""Prometheus metrics of an ingest worker, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]


class IngestMetrics:
    """What an ingest worker counts. Every quarantine reason is a label value of
    ``gridclear_ingest_quarantined_total``; alert on any of them rising."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "gridclear_ingest_messages",
            "Readings messages handled, by outcome (stored, duplicate, quarantined)",
            ("outcome",),
            registry=r,
        )
        self.quarantined = Counter(
            "gridclear_ingest_quarantined",
            "Messages refused into quarantine, by reason",
            ("reason",),
            registry=r,
        )
        self.quarantine_suppressed = Counter(
            "gridclear_ingest_quarantine_suppressed",
            "Refused messages over the quarantine cap of their device and window:"
            " counted here and in quarantine_windows, not kept",
            ("reason",),
            registry=r,
        )
        self.readings = Counter(
            "gridclear_ingest_readings", "Readings stored (new rows)", registry=r
        )
        self.chain = Counter(
            "gridclear_ingest_chain",
            "Stored messages by hash-chain verdict (first, ok, gap, broken)",
            ("verdict",),
            registry=r,
        )
        self.statuses = Counter(
            "gridclear_ingest_statuses", "Gateway status messages applied", registry=r
        )
        self.batch_seconds = Histogram(
            "gridclear_ingest_batch_seconds",
            "Time from taking a batch to acknowledging it, verification and commit included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.backlog = Gauge(
            "gridclear_ingest_backlog",
            "Messages received from the broker and not yet acknowledged",
            registry=r,
        )
        self.database_up = Gauge(
            "gridclear_ingest_database_up",
            "1 while the last write to the database succeeded, 0 while it fails",
            registry=r,
        )
        self.broker_connected = Gauge(
            "gridclear_ingest_broker_connected", "1 while connected to the broker", registry=r
        )
        self.group_members_absent = Gauge(
            "gridclear_ingest_group_members_absent",
            "Members of this worker's group away without having left: the broker queues"
            " their share of the readings until they return or are handed back",
            registry=r,
        )
        self.interval_slots = Counter(
            "gridclear_ingest_interval_slots",
            "Interval energy slots (re)computed",
            registry=r,
        )
        self.keys_unreadable = Gauge(
            "gridclear_ingest_keys_unreadable",
            "Device keys left out at the last key load because a value could not be read",
            registry=r,
        )
