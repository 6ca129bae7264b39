"""API: wallet sign-in verifications/s, and authenticated GET /api/auth/profile under wrk.

Figures, all from one run on one machine:

- the pure check of a signed sign-in message (parse, compare, Ed25519 verify), per
  second on one core;
- complete wallet sign-ins (``/api/auth/init`` + ``/api/auth/verify``) per second over
  HTTP against a real server (Redis nonce, PostgreSQL account and session, audit row);
- ``GET /api/auth/profile`` with a bearer token (JWT verify, Redis revocation check and
  rate-limit hit, one PostgreSQL query), requests/s and p50/p99 latency under wrk, with
  1 and 2 uvicorn workers, beside a bare FastAPI endpoint served the same way.

wrk runs on the same 2-core machine as the server, so absolute numbers are low; the
ratio to the bare endpoint is the figure to read.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import base58
import httpx
from fastapi import FastAPI
from nacl.signing import SigningKey

from bench.harness import REPO_ROOT, BenchContext, Figure
from gridclear.cloud.identity.siws import build_message, new_nonce, parse_message, verify_signature
from gridclear.cloud.settings import generate_signing_key_pem
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.net import free_port

bare_app = FastAPI()


@bare_app.get("/bare")
async def bare() -> dict[str, object]:
    """The baseline: FastAPI and uvicorn doing nothing but answering."""
    return {"success": True, "data": {"ok": True}}


def _wallet() -> tuple[SigningKey, str]:
    key = SigningKey.generate()
    return key, base58.b58encode(bytes(key.verify_key)).decode()


def pure_verify_rate(n: int) -> float:
    """Signed sign-in messages checked per second (what /verify does besides I/O)."""
    key, address = _wallet()
    now = datetime.now(UTC)
    message = build_message(
        domain="market.example.org",
        address=address,
        statement="Sign in to gridclear, the local energy market.",
        uri="https://market.example.org",
        chain_id="mainnet",
        nonce=new_nonce(),
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
    )
    signature = base58.b58encode(key.sign(message.encode()).signature).decode()
    started = time.perf_counter()
    for _ in range(n):
        parsed = parse_message(message)
        assert parsed.address == address
        assert verify_signature(address=address, message=message, signature=signature)
    return n / (time.perf_counter() - started)


@contextmanager
def _server(app: str, *, workers: int, env: dict[str, str], factory: bool) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning", "--app-dir", str(REPO_ROOT),
    ]  # fmt: skip
    if factory:
        command.append("--factory")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.2)
        time.sleep(0.5 * workers)  # let every worker finish starting
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class SignInLoad:
    """What one sign-in load run measured, across every load-generator process."""

    rate: float
    """Complete sign-ins (init + verify) per second."""
    p50_ms: float
    p99_ms: float
    """Latency of a complete sign-in (both requests), milliseconds."""
    client_cpu: float
    """CPU the load generator used, in cores (1.0 = one core busy the whole run)."""


def _sign_in_process(
    base: str, n: int, concurrency: int, start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """One load-generator process: ``n`` sign-ins, ``concurrency`` at a time, over aiohttp.

    aiohttp rather than httpx: httpx's connection pool costs milliseconds of CPU
    per request at this concurrency, and made the load generator the limit.
    """
    import aiohttp

    async def main() -> tuple[list[float], float, float]:
        latencies: list[float] = []
        remaining = n
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(base, connector=connector) as session:

            async def one() -> None:
                key, address = _wallet()
                began = time.perf_counter()
                async with session.post("/api/auth/init", json={"walletAddress": address}) as r:
                    message = (await r.json())["data"]["message"]
                signature = base58.b58encode(key.sign(message.encode()).signature).decode()
                body = {"walletAddress": address, "signature": signature, "message": message}
                async with session.post("/api/auth/verify", json=body) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                latencies.append(time.perf_counter() - began)

            async def loop() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await one()

            await one()  # warm up: connection, first-use imports
            latencies.clear()
            start.wait()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(concurrency)))
            return latencies, time.process_time() - cpu0, time.perf_counter() - wall0

    results.put(asyncio.run(main()))


def sign_in_load(base: str, *, n: int, concurrency: int, processes: int = 2) -> SignInLoad:
    """Complete wallet sign-ins against ``base`` from ``processes`` load-generator processes.

    Each process runs ``n / processes`` sign-ins with ``concurrency / processes`` in
    flight; all start together. The rate is all sign-ins over the longest process's
    time; the CPU is what the processes used, so a reader can see whether the load
    generator, rather than the server, was the limit.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    each = max(1, n // processes)
    children = [
        context.Process(
            target=_sign_in_process,
            args=(base, each, max(1, concurrency // processes), start, results),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    time.sleep(2.0)  # let every process import, connect and warm up before the start
    start.set()
    outcomes = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=30)
    latencies = sorted(x for outcome in outcomes for x in outcome[0])
    wall = max(outcome[2] for outcome in outcomes)
    cpu = sum(outcome[1] for outcome in outcomes)
    return SignInLoad(
        rate=len(latencies) / wall,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        client_cpu=cpu / wall,
    )


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, *, seconds: int, headers: dict[str, str]) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of ``url`` under wrk (2 threads, 32 connections)."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error answers under load:\n{output}")

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        return float(match.group(1)) * _UNIT[match.group(2)]

    return rps, percentile("50"), percentile("99")


def run(ctx: BenchContext) -> list[Figure]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    figures: list[Figure] = []
    verify_rate = pure_verify_rate(2_000 if ctx.quick else 20_000)
    figures.append(
        Figure("signed message checks", verify_rate, "checks/s", "parse + Ed25519, one core")
    )
    seconds = 3 if ctx.quick else 10
    with ctx.fresh_database("bench_api") as database_url:
        migrate(database_url)
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": database_url,
            "GRIDCLEAR_REDIS_URL": ctx.redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"bench:api:{uuid.uuid4().hex[:8]}:",
            "GRIDCLEAR_JWT_PRIVATE_KEY": generate_signing_key_pem(),
            # Limits stay on (their Redis round trip is part of the cost) but out of reach.
            "GRIDCLEAR_RATE_LIMITS": (
                '{"auth": "10000000/minute", "account": "10000000/minute",'
                ' "api": "10000000/minute", "identity": "10000000/minute"}'
            ),
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }
        for workers in (1, 2):
            with _server(
                "gridclear.cloud.api.app:create_app_from_env", workers=workers, env=env,
                factory=True,
            ) as base:  # fmt: skip
                load = sign_in_load(base, n=400 if ctx.quick else 6000, concurrency=32)
                figures += [
                    Figure(
                        f"wallet sign-ins, {workers} worker(s)",
                        load.rate,
                        "sign-ins/s",
                        "init + verify over HTTP, 32 concurrent from 2 processes",
                    ),
                    Figure(f"sign-in p50, {workers} worker(s)", load.p50_ms, "ms", "init + verify"),
                    Figure(f"sign-in p99, {workers} worker(s)", load.p99_ms, "ms", "init + verify"),
                    Figure(
                        f"sign-in load generator CPU, {workers} worker(s)",
                        load.client_cpu,
                        "cores",
                        "near 2 would mean the generator, not the server, was the limit",
                    ),
                ]
                key, address = _wallet()
                init = httpx.post(f"{base}/api/auth/init", json={"walletAddress": address})
                message = init.json()["data"]["message"]
                signature = base58.b58encode(key.sign(message.encode()).signature).decode()
                token = httpx.post(
                    f"{base}/api/auth/verify",
                    json={"walletAddress": address, "signature": signature, "message": message},
                ).json()["data"]["accessToken"]
                rps, p50, p99 = _wrk(
                    f"{base}/api/auth/profile",
                    seconds=seconds,
                    headers={"Authorization": f"Bearer {token}"},
                )
            with _server(
                "bench.bench_api:bare_app", workers=workers, env=env, factory=False
            ) as bare:
                bare_rps, bare_p50, bare_p99 = _wrk(f"{bare}/bare", seconds=seconds, headers={})
            label = f"{workers} worker(s)"
            figures += [
                Figure(f"profile, {label}", rps, "req/s", "GET /api/auth/profile, wrk -c32"),
                Figure(f"profile p50, {label}", p50, "ms", ""),
                Figure(f"profile p99, {label}", p99, "ms", ""),
                Figure(f"bare FastAPI, {label}", bare_rps, "req/s", "GET /bare, same server setup"),
                Figure(f"bare p50, {label}", bare_p50, "ms", ""),
                Figure(f"bare p99, {label}", bare_p99, "ms", ""),
                Figure(
                    f"profile / bare, {label}", rps / bare_rps, "ratio", "cost of the identity path"
                ),
            ]
    return figures
