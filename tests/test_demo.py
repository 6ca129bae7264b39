"""script/demo: the system comes up, is reachable where it says, and stops on a signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import psycopg.rows
import pytest
import redis

from gridclear.devtools import REPO_ROOT

READY_LINE = "Press Ctrl-C to stop."


def _read_until_ready(process: subprocess.Popen[str], timeout_s: float = 180) -> str:
    # A bound against a hang, not a speed target: the demo starts five agents, three
    # servers and a simulator, and on a busy two-core machine that took 65-106 s.
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if READY_LINE in line:
            return "".join(seen)
    raise AssertionError("the demo never became ready:\n" + "".join(seen))


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _children(parent: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # The process name may hold spaces; the parent pid follows the last ')'.
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            pids.append(int(proc.name))
    return pids


def _readings_arrive_through_the_api(output: str) -> None:
    """Sign in as the printed operator and watch a meter's readings appear."""
    api = re.search(r"api\s+(http://\S+)", output)
    login = re.search(r"-d @(\S+login\.json)", output)
    assert api, output
    assert login, output
    with httpx.Client(base_url=api.group(1), timeout=10) as http:
        session = http.post(
            "/api/auth/login",
            content=Path(login.group(1)).read_bytes(),
            headers={"content-type": "application/json"},
        ).json()
        assert session["success"], session
        http.headers["Authorization"] = f"Bearer {session['data']['accessToken']}"
        meters = http.get("/api/meters").json()["data"]
        assert {m["name"] for m in meters} >= {"house1-grid", "house1-pv", "house3-grid"}
        grid = next(m for m in meters if m["name"] == "house1-grid")
        deadline = time.monotonic() + 60
        readings: list[dict[str, object]] = []
        while not readings and time.monotonic() < deadline:
            readings = http.get(f"/api/meters/{grid['id']}/readings").json()["data"]
            time.sleep(0.5)
        assert readings, "no reading of house1-grid arrived through the API within 60 s"
        assert isinstance(readings[0]["importWh"], int)


_TRADED_SLOT_MEASURED = """
SELECT s.id AS slot_id, s.starts_at, s.ends_at, o.meter_id, ie.export_wh,
       sum(t.quantity_wh) AS sold_wh
FROM trades t
JOIN orders o ON o.id = t.sell_order_id
JOIN timeslots s ON s.id = t.timeslot_id
JOIN interval_energy ie
  ON ie.meter_id = o.meter_id AND ie.slot_start = s.starts_at AND ie.complete
GROUP BY s.id, s.starts_at, s.ends_at, o.meter_id, ie.export_wh
ORDER BY s.starts_at
LIMIT 1
"""


def _a_traded_slot_has_measured_export(output: str, database_url: str) -> None:
    """Market time and reading time agree: a cleared slot's seller has interval energy
    for that very slot, with export in it, in the database and through the API."""
    deadline = time.monotonic() + 240  # a liveness bound: slots pass every 15 s at 60x
    row = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.row_factory = psycopg.rows.dict_row
        while row is None and time.monotonic() < deadline:
            row = conn.execute(_TRADED_SLOT_MEASURED).fetchone()
            if row is None:
                time.sleep(1)
        trades = conn.execute("SELECT count(*) AS n FROM trades").fetchone()
    assert row is not None, (
        f"no traded slot got its seller's interval energy within 240 s ({trades} trades)"
    )
    assert row["export_wh"] > 0, row
    api = re.search(r"api\s+(http://\S+)", output)
    login = re.search(r"-d @(\S+login\.json)", output)
    assert api, output
    assert login, output
    with httpx.Client(base_url=api.group(1), timeout=10) as http:
        session = http.post(
            "/api/auth/login",
            content=Path(login.group(1)).read_bytes(),
            headers={"content-type": "application/json"},
        ).json()
        http.headers["Authorization"] = f"Bearer {session['data']['accessToken']}"
        window = {"from": row["starts_at"].isoformat(), "to": row["ends_at"].isoformat()}
        (interval,) = http.get(f"/api/meters/{row['meter_id']}/intervals", params=window).json()[
            "data"
        ]
        assert interval["exportWh"] == row["export_wh"] > 0
        # Without a window the API shows the market's last day, which holds the slot.
        recent = http.get(f"/api/meters/{row['meter_id']}/intervals").json()["data"]
        assert interval["slotStart"] in {i["slotStart"] for i in recent}


def _a_slot_settles_on_the_ledger(database_url: str) -> None:
    """A trade with delivered energy is settled on the ledger node, and reconciliation
    of the ledger against the database is clean."""
    deadline = time.monotonic() + 240  # a liveness bound, as above
    found = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        while found is None and time.monotonic() < deadline:
            found = conn.execute(
                "SELECT s.delivered_wh, s.payment, a.signature FROM trade_settlements s"
                " JOIN ledger_attempts a ON a.id = s.attempt_id"
                " WHERE s.state = 'settled' AND s.delivered_wh > 0 AND a.state = 'landed'"
                " LIMIT 1"
            ).fetchone()
            if found is None:
                time.sleep(1)
        states = conn.execute(
            "SELECT state, reason, count(*) FROM trade_settlements GROUP BY 1, 2"
        ).fetchall()
        assert found is not None, f"no trade settled within 240 s: {states}"
        clean = None
        while clean is None and time.monotonic() < deadline + 120:
            clean = conn.execute(
                "SELECT clean, differences FROM reconciliation_runs"
                " WHERE at > (SELECT max(settled_at) FROM trade_settlements WHERE state = 'settled'"
                "             AND delivered_wh > 0 LIMIT 1)"
                " ORDER BY id LIMIT 1"
            ).fetchone()
            if clean is None:
                time.sleep(1)
    assert clean is not None, "no reconciliation ran after the first settlement"
    assert clean[0] is True, clean[1]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_prints_where_services_run_and_stops_cleanly(
    stop_signal: signal.Signals, server_dir: Path
) -> None:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("GRIDCLEAR_") or k == "PATH"
    }
    command = [
        str(Path(sys.executable).parent / "gridclear-dev"),
        "demo",
        "--run-dir",
        str(server_dir),
        "--broker-policy",
        str(REPO_ROOT / "deploy/mosquitto/conf.d"),
    ]
    if stop_signal is signal.SIGINT:
        # As a script starts a background job: SIGINT inherited as ignored, which
        # Python then never turns into KeyboardInterrupt by itself.
        command = ["/bin/sh", "-c", "trap '' INT; exec \"$@\"", "sh", *command]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    ) as demo:
        try:
            output = _read_until_ready(demo)
            database = re.search(r"postgres\s+(postgresql://\S+)", output)
            cache = re.search(r"redis\s+(redis://\S+)", output)
            broker = re.search(r"mosquitto\s+(mqtt://\S+)", output)
            assert database, output
            assert cache, output
            assert broker, output
            with psycopg.connect(database.group(1)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            client = redis.Redis.from_url(cache.group(1))
            assert client.ping()
            client.close()
            _readings_arrive_through_the_api(output)
            _a_traded_slot_has_measured_export(output, database.group(1))
            _a_slot_settles_on_the_ledger(database.group(1))
            # Servers, simulator, ledger node, ingest, API and one agent per household.
            children = _children(demo.pid)
            assert len(children) >= 3 + 4 + 5, children
        finally:
            demo.send_signal(stop_signal)
            remaining, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, remaining
    assert "every service shut down" in remaining
    assert not [pid for pid in children if _alive(pid)]
