"""Prometheus metrics of real-time events.

In the API they live in the app's own registry (served at ``/metrics``); a
publisher in another process (the scheduler) gets a registry of its own unless
it is handed one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["RealtimeMetrics"]


class RealtimeMetrics:
    """Counters of events sent and refused, connections and bad client messages."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.emitted = Counter(
            "gridclear_realtime_events_emitted",
            "Events handed to Socket.IO (and to Redis for the other instances), by event",
            ("event",),
            registry=self.registry,
        )
        self.emit_failures = Counter(
            "gridclear_realtime_emit_failures",
            "Events that could not be sent, by event and reason"
            " (bad_event, bad_payload, bad_target, redis, error)",
            ("event", "reason"),
            registry=self.registry,
        )
        self.connections = Gauge(
            "gridclear_realtime_connections",
            "Socket.IO clients connected to this instance",
            registry=self.registry,
            # The API's workers share one /metrics: the sum over the live ones.
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            "gridclear_realtime_connections_refused",
            "Socket.IO connections refused, by reason (the error code)",
            ("reason",),
            registry=self.registry,
        )
        self.client_errors = Counter(
            "gridclear_realtime_client_errors",
            "Client messages refused, by event and reason",
            ("event", "reason"),
            registry=self.registry,
        )
        self.disconnects = Counter(
            "gridclear_realtime_disconnects",
            "Clients gone, by reason: Engine.IO's (client disconnect, ping timeout,"
            " transport close, transport error, server disconnect) or gridclear's"
            " (token_expired, session_revoked)",
            ("reason",),
            registry=self.registry,
        )
