"""Orders: POST /api/bids over HTTP under wrk (orders/s, p50/p99); clearing a slot in the service.

Each request is a complete order placement as an app makes it: bearer token
(JWT signature, Redis revocation check and rate-limit counts for the address and
the identity), the slot locked FOR SHARE and checked open, the account checked
active, the meter's ownership and role checked, the order inserted, the
``bid_update`` event published through Redis, and (second variant) a fresh
``Idempotency-Key`` per request, whose unique index is checked too. Concurrent
requests share their Redis and PostgreSQL round trips (gridclear.cloud.batching),
so throughput grows with the number of requests in flight.

Figures, with 1 and 2 uvicorn workers, beside a bare FastAPI POST served the same
way; wrk (2 threads, 32 connections, and 64 with 2 workers) runs on the same
2-core machine as the server, PostgreSQL and Redis. The count of orders stored
is checked against wrk's count.

Then the service's clearing of one slot holding 10,000 and 100,000 orders: read
the book from PostgreSQL, run the engine, write every fill, the trades and the
slot's result in one transaction (what the scheduler does at gate closure).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from fastapi import FastAPI
from psycopg.rows import dict_row

from bench.bench_api import _server
from bench.harness import BenchContext, Figure
from gridclear.cloud.market.service import clear_slot
from gridclear.cloud.settings import generate_signing_key_pem
from gridclear.cloud.storage.migrations import migrate

bare_app = FastAPI()


@bare_app.post("/bare")
async def bare(body: dict[str, int]) -> dict[str, object]:
    """The baseline: FastAPI parsing a small JSON body and answering."""
    return {"success": True, "data": body}


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}

_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end
local counter = 0
function request()
  if %(keyed)s then
    counter = counter + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Idempotency-Key"] = "%(run)s-" .. tostring(tid) .. "-" .. tostring(counter)
    return wrk.format(nil, nil, headers, nil)
  end
  return wrk.format()
end
"""


def _wrk(
    url: str, script: Path, seconds: int, connections: int = 32
) -> tuple[float, int, float, float]:
    """Requests/s, requests, p50 and p99 (ms) of POSTs to ``url`` (wrk, 2 threads)."""
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error answers under load:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        return float(match.group(1)) * _UNIT[match.group(2)]

    return rps, total, percentile("50"), percentile("99")


def _market(database_url: str, user_id: int) -> tuple[int, int]:
    """An open slot and an import meter owned by ``user_id``."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        slot = conn.execute(
            "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at, state,"
            " price_floor, price_cap) VALUES (%s, %s, %s, %s, %s, 'open', 0, 1000000)"
            " RETURNING id",
            (
                start,
                start + timedelta(minutes=15),
                start - timedelta(days=1),
                start - timedelta(minutes=5),
                start + timedelta(minutes=30),
            ),
        ).fetchone()
        device = conn.execute(
            "INSERT INTO devices (device_id) VALUES ('bench-gw') RETURNING id"
        ).fetchone()
        assert slot is not None
        assert device is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm1', %s, 'both')"
            " RETURNING id",
            (device[0], user_id),
        ).fetchone()
        assert meter is not None
    return int(slot[0]), int(meter[0])


def _count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


def _closed_slot_with_orders(database_url: str, n: int) -> int:
    """A closed slot holding ``n`` orders (half bids, half offers) of two traders."""
    start = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * n)
    with psycopg.connect(database_url, autocommit=True) as conn:
        users = [
            conn.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()
            for _ in range(2)
        ]
        device = conn.execute(
            "INSERT INTO devices (device_id) VALUES ('bench-clear-' || gen_random_uuid())"
            " RETURNING id"
        ).fetchone()
        assert device is not None
        meter = conn.execute(
            "INSERT INTO meters (device_pk, name, owner_id, role) VALUES (%s, 'm', %s, 'both')"
            " RETURNING id",
            (device[0], users[0][0] if users[0] else None),
        ).fetchone()
        slot = conn.execute(
            "INSERT INTO timeslots (starts_at, ends_at, opens_at, closes_at, settles_at, state,"
            " price_floor, price_cap) VALUES (%s, %s, %s, %s, %s, 'closed', 0, 1000000)"
            " RETURNING id",
            (start, start + timedelta(minutes=15), start, start, start + timedelta(hours=1)),
        ).fetchone()
        assert meter is not None
        assert slot is not None
        with conn.cursor().copy(
            "COPY orders (timeslot_id, user_id, meter_id, side, quantity_wh, price) FROM STDIN"
        ) as copy:
            for i in range(n):
                buy = i % 2 == 0
                user = users[0 if buy else 1]
                assert user is not None
                # Prices overlap so about half of each side trades, with ties at levels.
                price = 100_000 + (i * 7919) % 100_000 if buy else 50_000 + (i * 104729) % 100_000
                copy.write_row(
                    (slot[0], user[0], meter[0], "buy" if buy else "sell", 100 + i % 900, price)
                )
    return int(slot[0])


async def _time_clearing(database_url: str, slot_id: int) -> tuple[float, int]:
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        started = time.perf_counter()
        outcome = await clear_slot(conn, slot_id)
        elapsed = time.perf_counter() - started
    assert outcome is not None
    return elapsed, int(outcome[0].volume_wh or 0)


def run(ctx: BenchContext) -> list[Figure]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    figures: list[Figure] = []
    seconds = 3 if ctx.quick else 10
    with ctx.fresh_database("bench_orders") as database_url:
        migrate(database_url)
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": database_url,
            "GRIDCLEAR_REDIS_URL": ctx.redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"bench:orders:{uuid.uuid4().hex[:8]}:",
            "GRIDCLEAR_JWT_PRIVATE_KEY": generate_signing_key_pem(),
            # Limits stay on (their Redis round trip is part of the cost) but out of reach.
            "GRIDCLEAR_RATE_LIMITS": (
                '{"auth": "10000000/minute", "account": "10000000/minute",'
                ' "api": "10000000/minute", "identity": "10000000/minute"}'
            ),
            "GRIDCLEAR_ARGON2_TIME_COST": "1",
            "GRIDCLEAR_ARGON2_MEMORY_KIB": "8192",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }
        slot_id = meter_id = 0
        for workers in (1, 2):
            label = f"{workers} worker(s)"
            with _server(
                "gridclear.cloud.api.app:create_app_from_env", workers=workers, env=env,
                factory=True,
            ) as base:  # fmt: skip
                email = f"bench-{uuid.uuid4().hex[:8]}@example.org"
                session = httpx.post(
                    f"{base}/api/auth/register",
                    json={"email": email, "password": "correct horse battery"},
                ).json()["data"]
                if not slot_id:
                    slot_id, meter_id = _market(database_url, session["user"]["id"])
                else:
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute(
                            "UPDATE meters SET owner_id = %s WHERE id = %s",
                            (session["user"]["id"], meter_id),
                        )
                body = json.dumps(
                    {"timeslotId": slot_id, "meterId": meter_id, "quantityWh": 1000, "price": 250}
                )
                shapes = [(keyed, 32) for keyed in (False, True)]
                if workers == 2:
                    shapes += [(False, 64)]
                for keyed, connections in shapes:
                    script = ctx.run_dir / f"orders-{workers}-{keyed}.lua"
                    script.write_text(
                        _SCRIPT
                        % {
                            "body": body,
                            "token": session["accessToken"],
                            "keyed": "true" if keyed else "false",
                            "run": uuid.uuid4().hex[:8],
                        }
                    )
                    before = _count(database_url)
                    rps, total, p50, p99 = _wrk(f"{base}/api/bids", script, seconds, connections)
                    stored = _count(database_url) - before
                    # wrk counts requests answered; ones cut off at the end may still commit.
                    if not total <= stored <= total + 64:
                        raise RuntimeError(f"wrk saw {total} orders placed, the database {stored}")
                    what = "with Idempotency-Key" if keyed else "no key"
                    what += f", {connections} conns"
                    load = f"wrk -t2 -c{connections}"
                    figures += [
                        Figure(f"orders, {what}, {label}", rps, "orders/s", "POST /api/bids"),
                        Figure(f"orders p50, {what}, {label}", p50, "ms", load),
                        Figure(f"orders p99, {what}, {label}", p99, "ms", load),
                    ]
            with _server(
                "bench.bench_orders:bare_app", workers=workers, env=env, factory=False
            ) as bare_base:
                script = ctx.run_dir / "bare.lua"
                script.write_text(
                    _SCRIPT % {"body": body, "token": "-", "keyed": "false", "run": "bare"}
                )
                bare_rps, _, bare_p50, bare_p99 = _wrk(f"{bare_base}/bare", script, seconds)
            figures += [
                Figure(f"bare FastAPI POST, {label}", bare_rps, "req/s", "same server setup"),
                Figure(f"bare p50, {label}", bare_p50, "ms", ""),
                Figure(f"bare p99, {label}", bare_p99, "ms", ""),
            ]
        for n in (10_000, 100_000):
            slot_id = _closed_slot_with_orders(database_url, n)
            elapsed, volume = asyncio.run(_time_clearing(database_url, slot_id))
            figures.append(
                Figure(
                    f"clear a slot of {n:,} orders in the service",
                    elapsed * 1000,
                    "ms",
                    f"read, engine, write fills/trades/result in one transaction; {volume:,} Wh",
                )
            )
    return figures
