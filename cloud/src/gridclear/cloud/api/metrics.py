"""Prometheus metrics of the API, in a registry of the app's own.

A registry per app (not the process-global default) keeps apps built in one
process (tests, embedding) from colliding. Routes are labelled by their
template (``/api/users/{user_id}``), never the raw path, so that the number of
series stays bounded whatever clients send; unmatched paths share one label.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """The counters and histograms the API updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gridclear_http_requests",
            "HTTP requests answered, by method, route template and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "gridclear_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "gridclear_auth_failures",
            "Refused authentications and sign-ins, by reason (the error code)",
            ("reason",),
            registry=self.registry,
        )
        self.errors = Counter(
            "gridclear_http_errors",
            "Error responses by error code",
            ("code",),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "gridclear_rate_limited",
            "Requests refused by a rate limit, by route group",
            ("group",),
            registry=self.registry,
        )

        # Children by label values: labels() validates and locks on every call,
        # and these two are updated on every request. Bounded like the series.
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def answered(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        """Count one answered request and its time (``route`` is the template)."""
        key = (method, route, str(status))
        children = self._answered.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(method, route))
            self._answered[key] = children
        children[0].inc()
        children[1].observe(elapsed_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
