"""What Prometheus scrapes, read from real processes: the API (one worker and two), an
ingest worker and the scheduler; and that the Grafana dashboards and the alert rules in
``deploy/`` name only metrics those processes export.

The names are collected from each process's ``/metrics`` (``# TYPE`` lines name every
metric family, with or without samples yet), never from the source, so a metric renamed
in the code fails here until the dashboards follow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from cloud.tests.api_support import fresh_database
from cloud.tests.process_support import Process

from gridclear.cloud import env
from gridclear.cloud.market.timeslots import SlotState
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools import REPO_ROOT
from gridclear.devtools.net import free_port
from gridclear.devtools.waiting import wait_for

GRAFANA = REPO_ROOT / "deploy/grafana"
DASHBOARDS = GRAFANA / "dashboards"
SETTLEMENT_DASHBOARD = "gridclear-settlement.json"
"""Its names are those settlement will export; ``deploy/grafana/README.md`` lists them."""
ALERTS = REPO_ROOT / "deploy/prometheus/alerts.yml"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
}


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape of ``exposition`` can yield (``_total``, ``_bucket`` ...)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)$", line)
        if match is not None:
            family, kind = match.groups()
            # The text format names a counter's family with its _total already.
            names.add(family)
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def named_in(expression: str) -> set[str]:
    """The gridclear metric names a PromQL expression uses."""
    return set(re.findall(r"\bgridclear_[a-z0-9_]+\b", expression))


def dashboard_expressions(path: Path) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: panels' targets and template queries."""
    document: dict[str, Any] = json.loads(path.read_text())
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    found.append(value)
                elif key == "query" and isinstance(value, dict):
                    found.append(str(value.get("query", "")))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return found


def still_to_come() -> set[str]:
    """The settlement names listed in deploy/grafana/README.md (a ``- `name` `` list)."""
    text = (GRAFANA / "README.md").read_text()
    section = text.split("## Still to come", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(gridclear_[a-z0-9_]+)`", section, re.MULTILINE))


def _scrape(url: str) -> str:
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    return answer.text


def _scraped(url: str, process: Process | None = None) -> str:
    """``url``'s exposition once ``process`` serves it (failing if it exits first)."""
    texts: list[str] = []

    def answered() -> bool:
        if process is not None:
            assert process.popen.poll() is None, "\n".join(process.lines)
        try:
            texts.append(_scrape(url))
        except httpx.TransportError:
            return False
        return True

    wait_for(
        answered,
        timeout_s=120,
        what=f"metrics at {url}" + ("" if process is None else "\n" + "\n".join(process.lines)),
    )
    return texts[-1]


@pytest.fixture(scope="module")
def cloud_env(postgres_admin_url: str, redis_url: str, mqtt_url: str) -> Iterator[dict[str, str]]:
    with fresh_database(postgres_admin_url) as url:
        migrate(url)
        yield {
            **os.environ,
            env.DATABASE_URL: url,
            env.REDIS_URL: redis_url,
            env.MQTT_URL: mqtt_url,
            env.REDIS_KEY_PREFIX: f"test:metrics:{uuid.uuid4().hex[:8]}:",
            env.LOG_LEVEL: "INFO",
            env.LOG_FORMAT: "json",
        }


@pytest.fixture(scope="module")
def scheduler_metrics(cloud_env: dict[str, str]) -> Iterator[str]:
    """The metrics URL of a running, accelerated scheduler that clears slots."""
    with psycopg.connect(cloud_env[env.DATABASE_URL], autocommit=True) as conn:
        conn.execute(
            "UPDATE market_config SET slot_length_s = 60, open_ahead_s = 120, gate_closure_s = 10"
        )
    port = free_port()
    process = Process(
        ["scheduler", "--speed", "120", "--interval", "0.1", "--metrics-port", str(port)],
        cloud_env,
    )
    try:
        process.wait_for_line("holds the market lock and acts")
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        assert process.stop(signal.SIGTERM) == 0, "\n".join(process.lines)


@pytest.fixture(scope="module")
def exported(cloud_env: dict[str, str], scheduler_metrics: str) -> set[str]:
    """The metric names the API, an ingest worker and the scheduler export."""
    names = exported_names(_scraped(scheduler_metrics))
    api_port, ingest_port = free_port(), free_port()
    api = Process(["serve", "--host", "127.0.0.1", "--port", str(api_port)], cloud_env)
    ingest = Process(
        [
            "ingest",
            *("--client-id", f"gridclear-cloud:metrics-{uuid.uuid4().hex[:6]}"),
            *("--group", f"metrics-{uuid.uuid4().hex[:6]}"),
            *("--metrics-port", str(ingest_port)),
        ],
        cloud_env,
    )
    try:
        names |= exported_names(_scraped(f"http://127.0.0.1:{api_port}/metrics", api))
        names |= exported_names(_scraped(f"http://127.0.0.1:{ingest_port}/metrics", ingest))
    finally:
        assert api.stop(signal.SIGTERM) in (0, -signal.SIGTERM), "\n".join(api.lines)
        assert ingest.stop(signal.SIGTERM) == 0, "\n".join(ingest.lines)
    return names


def test_the_scheduler_reports_slots_by_state_and_what_it_cleared(scheduler_metrics: str) -> None:
    samples: dict[str, float] = {}

    def cleared_one() -> bool:
        samples.clear()
        for line in _scrape(scheduler_metrics).splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples.get('gridclear_market_slot_transitions_total{state="cleared"}', 0) > 0

    wait_for(cleared_one, timeout_s=120, what="a slot cleared by the scheduler")
    assert samples["gridclear_scheduler_leader"] == 1
    assert samples["gridclear_scheduler_ticks_total"] > 0
    by_state = {k: v for k, v in samples.items() if k.startswith("gridclear_market_slots{")}
    assert sorted(by_state) == sorted(
        f'gridclear_market_slots{{state="{s.value}"}}' for s in SlotState
    )
    assert sum(by_state.values()) > 0
    assert "gridclear_market_clearing_price" in samples
    assert samples['gridclear_scheduler_job_seconds_count{job="market_tick"}'] > 0


def test_every_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    assert {"gridclear_http_requests_total", "gridclear_ingest_readings_total"} <= exported
    to_come = still_to_come()
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert len(dashboards) >= 4
    for path in dashboards:
        named = set().union(*map(named_in, dashboard_expressions(path)))
        assert named, f"{path.name} names no gridclear metric"
        allowed = exported | to_come if path.name == SETTLEMENT_DASHBOARD else exported
        assert named <= allowed, f"{path.name} names metrics nobody exports: {named - allowed}"
    # The names still to come are the settlement dashboard's, and no other's.
    settlement = set().union(
        *map(named_in, dashboard_expressions(DASHBOARDS / SETTLEMENT_DASHBOARD))
    )
    assert to_come, "deploy/grafana/README.md lists no names still to come"
    assert to_come <= settlement, f"listed but not on the dashboard: {to_come - settlement}"


def test_every_alert_names_only_exported_metrics(exported: set[str]) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    allowed = exported | still_to_come()
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            count += 1
            named = named_in(rule["expr"])
            assert named <= allowed, f"{rule['alert']} names unknown metrics: {named - allowed}"
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["annotations"]["runbook"], rule["alert"]
    assert count >= 10


def test_the_names_check_fails_on_a_metric_nobody_exports(exported: set[str]) -> None:
    assert named_in("sum(rate(gridclear_http_request_total[5m])) by (route)") - exported == {
        "gridclear_http_request_total"
    }


def test_two_api_workers_report_their_sums_through_one_metrics(
    cloud_env: dict[str, str], tmp_path: Path
) -> None:
    """Each worker answers some requests (the other one paused with SIGSTOP, so the
    kernel hands the connection to the one running); one scrape counts them all."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by an earlier run")
    port = free_port()
    api = Process(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        {**cloud_env, env.PROMETHEUS_MULTIPROC_DIR: str(folder)},
    )
    base = f"http://127.0.0.1:{port}"
    paused: int | None = None
    try:
        # Each worker's app makes its live gauge's file when it is built.
        def workers() -> list[int]:
            return sorted(int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("gauge_livesum_*"))

        wait_for(lambda: len(workers()) == 2, timeout_s=120, what="two workers' apps")
        assert not (folder / "counter_1.db").exists(), "stale values were kept"
        _scraped(f"{base}/api/health/live", api)
        sent = 1
        for worker in workers():
            os.kill(worker, signal.SIGSTOP)
            paused = worker
            for _ in range(3):
                httpx.get(f"{base}/api/health/live", timeout=60).raise_for_status()
                sent += 1
            os.kill(worker, signal.SIGCONT)
            paused = None
        answered = {int(p.stem.rsplit("_", 1)[1]) for p in folder.glob("counter_*.db")}
        assert answered == set(workers()), "each worker answered"
        text = _scrape(f"{base}/metrics")
        live = re.findall(
            r'^gridclear_http_requests_total\{method="GET",route="/api/health/live",'
            r'status="200"\} (\S+)$',
            text,
            re.MULTILINE,
        )
        assert live == [f"{float(sent)}"], text
        assert "gridclear_realtime_connections 0.0" in text
    finally:
        if paused is not None:
            os.kill(paused, signal.SIGCONT)
        assert api.stop(signal.SIGTERM) in (0, -signal.SIGTERM), "\n".join(api.lines)
