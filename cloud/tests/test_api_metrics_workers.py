"""The API's metrics across worker processes (prometheus-client's multiprocess mode):
sums over the processes, live gauges of processes gone dropped, stale files cleared.

Real processes write the values, as uvicorn's workers do; the end-to-end run with
``serve --workers 2`` is in ``tests/test_metrics_exposed.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridclear.cloud import env
from gridclear.cloud.api.metrics import render_multiprocess
from gridclear.cloud.api.serve import prepare_metrics_dir

_WORKER = """
import sys
from gridclear.cloud.api.metrics import ApiMetrics
from gridclear.cloud.realtime.metrics import RealtimeMetrics

metrics = ApiMetrics()
realtime = RealtimeMetrics(metrics.registry)
for _ in range(int(sys.argv[1])):
    metrics.answered("GET", "/api/health/live", 200, 0.002)
realtime.connections.set(int(sys.argv[2]))
if sys.argv[3] == "stay":
    print("counted", flush=True)
    sys.stdin.read()  # alive until the test closes stdin
"""


def _worker(folder: Path, requests: int, connections: int, stay: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(requests), str(connections), "stay" if stay else "go"],
        env={**os.environ, env.PROMETHEUS_MULTIPROC_DIR: str(folder)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _sample(text: str, pattern: str) -> float | None:
    found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_counts_of_all_workers_are_summed_and_gone_workers_connections_dropped(
    tmp_path: Path,
) -> None:
    gone = _worker(tmp_path, 3, 7, stay=False)
    gone.communicate(timeout=60)
    assert gone.returncode == 0
    alive = _worker(tmp_path, 4, 5, stay=True)
    try:
        assert alive.stdout is not None
        assert alive.stdout.readline() == "counted\n"
        text = render_multiprocess(tmp_path).decode()
    finally:
        alive.communicate(timeout=60)
    requests = (
        r'gridclear_http_requests_total\{method="GET",route="/api/health/live",status="200"\}'
    )
    assert _sample(text, requests) == 7.0
    latency = (
        r'gridclear_http_request_duration_seconds_count\{method="GET",route="/api/health/live"\}'
    )
    assert _sample(text, latency) == 7.0
    # The worker that exited had 7 connections: only the live one's 5 count.
    assert _sample(text, "gridclear_realtime_connections") == 5.0
    # Once the second is gone too, no connection is counted; its requests still are.
    text = render_multiprocess(tmp_path).decode()
    assert _sample(text, "gridclear_realtime_connections") in (None, 0.0)
    assert _sample(text, requests) == 7.0


def test_serve_empties_the_operators_folder_and_makes_one_for_several_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_4242.db").write_bytes(b"from the last run")
    (given / "keep.txt").write_text("not a metrics file")
    monkeypatch.setenv(env.PROMETHEUS_MULTIPROC_DIR, str(given))
    assert prepare_metrics_dir(workers=4) is None
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]

    monkeypatch.delenv(env.PROMETHEUS_MULTIPROC_DIR)
    assert prepare_metrics_dir(workers=1) is None
    assert env.PROMETHEUS_MULTIPROC_DIR not in os.environ
    made = prepare_metrics_dir(workers=2)
    assert made is not None
    try:
        assert made.is_dir()
        assert os.environ[env.PROMETHEUS_MULTIPROC_DIR] == str(made)
    finally:
        made.rmdir()
