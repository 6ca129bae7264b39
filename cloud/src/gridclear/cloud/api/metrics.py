"""Prometheus metrics of the API, in a registry of the app's own.

A registry per app (not the process-global default) keeps apps built in one
process (tests, embedding) from colliding. Routes are labelled by their
template (``/api/users/{user_id}``), never the raw path, so that the number of
series stays bounded whatever clients send; unmatched paths share one label.

**Several workers, one ``/metrics``.** ``gridclear-cloud serve --workers N`` runs N
processes behind one port, and a scrape reaches whichever accepts it. So the
server runs prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by :func:`gridclear.cloud.api.serve.serve` before the workers start): every
process keeps its values in memory-mapped files in that folder, and
:meth:`ApiMetrics.render` merges the files of all workers, so counters and
histograms are the sums over the workers and the connection gauge the sum over
the live ones. A worker that died leaves its counters (they stay true), while its
live gauges are dropped at the next scrape. Without the variable (one process,
tests) the app's registry is rendered as it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gridclear.cloud import env

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics", "multiprocess_dir", "render_multiprocess"]

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
        """The text exposition: every worker's values merged in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is not None:
            return render_multiprocess(directory)
        return generate_latest(self.registry)


def multiprocess_dir() -> Path | None:
    """The multiprocess folder when prometheus-client runs in that mode, else None.

    prometheus-client chooses where values live once, when it is first imported, from
    ``PROMETHEUS_MULTIPROC_DIR``; this reads the same variable.
    """
    value = os.environ.get(env.PROMETHEUS_MULTIPROC_DIR)
    return Path(value) if value else None


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def render_multiprocess(directory: Path) -> bytes:
    """Merge the values of every process that wrote into ``directory``.

    Live gauges (``multiprocess_mode="live…"``) of processes that no longer exist
    are removed first: uvicorn replaces a worker that died, and the dead one's
    connections must not be counted for ever.
    """
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match is not None and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: it exists
        return True
    return True
