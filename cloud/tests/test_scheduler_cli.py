"""``gridclear-cloud scheduler`` as operators run it: a real process, accelerated,
stopped with SIGTERM; and clear refusals of bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from cloud.tests.process_support import Process

from gridclear.cloud import env


def _command(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "gridclear-cloud"), "scheduler", *args],
        env={**os.environ, env.DATABASE_URL: url, env.LOG_FORMAT: "text"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_scheduler_runs_accelerated_and_stops_cleanly_on_sigterm(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("TRUNCATE trades, orders, timeslots CASCADE")
        conn.execute(
            "UPDATE market_config SET slot_length_s = 60, open_ahead_s = 120, gate_closure_s = 10"
        )
    process = _command(migrated_db, "--speed", "120", "--interval", "0.1")
    try:
        deadline = time.monotonic() + 60
        closed = 0
        while closed == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            with psycopg.connect(migrated_db) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM timeslots WHERE state IN ('cleared', 'settling')"
                ).fetchone()
            closed = row[0] if row else 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert closed > 0, stderr
    assert "holds the market lock" in stderr


def test_bad_settings_are_refused_with_a_clear_message(migrated_db: str) -> None:
    process = _command(migrated_db, "--speed", "-3")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "gridclear-cloud scheduler: speed must be above 0" in stderr


def test_a_standby_scheduler_says_so_and_says_when_it_takes_over(migrated_db: str) -> None:
    environment = {**os.environ, env.DATABASE_URL: migrated_db, env.LOG_FORMAT: "json"}
    args = ["scheduler", "--speed", "60", "--interval", "0.1"]
    first = Process(args, environment)
    second: Process | None = None
    try:
        first.wait_for_line("holds the market lock and acts")
        second = Process(args, environment)
        standing_by = json.loads(second.wait_for_line("standing by"))
        assert standing_by["level"] == "INFO"
        assert standing_by["message"].startswith("scheduler standing by: another scheduler holds")
        assert first.stop(signal.SIGTERM) == 0
        took_over = json.loads(second.wait_for_line('"scheduler takes over'))
        assert took_over["level"] == "INFO"
        assert not any('"scheduler takes over' in line for line in first.lines)
    finally:
        for process in (first, second):
            if process is not None and process.popen.poll() is None:
                assert process.stop(signal.SIGINT) == 0, "\n".join(process.lines)
