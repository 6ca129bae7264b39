"""Socket.IO fan-out: one event to 5,000 connected clients, delivery p50/p99, connect rate.

What runs, all on this one 2-core machine:

- ``gridclear-cloud serve`` with its real dependencies (PostgreSQL, Redis), with one
  and then two uvicorn workers; every client authenticates at connect with a real
  access token (Ed25519 JWT, Redis revocation check and rate-limit hits, PostgreSQL
  user lookup), joins its private room and the room ``timeslot:1``;
- the clients, split across two client processes, of two kinds:
  ``raw``: Socket.IO v5 spoken over a bare aiohttp WebSocket (handshake, auth,
  join, pong, events: the real protocol with the least client overhead, so the
  figures show the server's fan-out); ``sio``: python-socketio's ``AsyncClient``,
  as a Python app would connect (it costs a task per event on the client side);
- the sender: a write-only ``EventPublisher.from_redis_url`` in this process (the
  scheduler's path): Redis pub/sub, then every API worker writes the event to its
  clients in the room. With two workers the clients are spread over both by the
  kernel, and the event reaches both through Redis.

Each round emits one ``timeslot_update`` carrying its send time (``CLOCK_MONOTONIC``,
which all processes on a machine share); each client notes its receive time. The
next round starts once every client has its event. Figures: connect time and rate
(measured inside the client processes, without their start-up), delivery latency
p50/p99/max over every (client, round), the time until the parent has heard that
the *last* client has the event (median over rounds; an upper bound), clients lost
during the run (a round waits for every client still connected; the share of
(client, event) pairs delivered is reported), and as the baseline the same path with
a single client connected.

The client processes compete with the server and Redis for the two cores, so these
latencies are an upper bound for what the server does alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
import socketio

from bench.harness import REPO_ROOT, BenchContext, Figure
from gridclear.cloud.realtime import EventPublisher
from gridclear.cloud.settings import generate_signing_key_pem
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.net import free_port

CLIENT_PROCESSES = 2
CONNECT_CONCURRENCY = 50  # connects in flight per client process
ROOM = "timeslot:1"


# ---------------------------------------------------------------- client process


class _Tally:
    """Latencies of one client process, and which rounds every client has seen."""

    def __init__(self, count: int, rounds: int) -> None:
        self.count = count
        self.latencies: list[int] = []
        self.per_round = [0] * rounds
        self.done = [asyncio.Event() for _ in range(rounds)]

    def received(self, data: dict[str, Any]) -> None:
        self.latencies.append(time.monotonic_ns() - int(data["sentNs"]))
        r = int(data["round"])
        self.per_round[r] += 1
        if self.per_round[r] == self.count:
            self.done[r].set()


class _RawClient:
    """Socket.IO v5 over a bare WebSocket: handshake, auth, join, pong, and events.

    The lightest client that still speaks the real protocol to the real server, so
    the figures show the server's fan-out rather than a Python client's overhead.
    """

    def __init__(self, session: aiohttp.ClientSession, tally: _Tally) -> None:
        self.session = session
        self.tally = tally
        self.reader: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def connect(self, url: str, token: str) -> None:
        ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        # aiohttp answers WebSocket pings itself; Engine.IO's pings are text ("2").
        ws = self.ws = await self.session.ws_connect(ws_url, max_msg_size=0)
        opened = await ws.receive_str()  # Engine.IO open: 0{"sid": ..., "pingInterval": ...}
        assert opened.startswith("0{"), opened
        await ws.send_str("40" + json.dumps({"token": token}))
        connected = await ws.receive_str()
        assert connected.startswith("40{"), connected
        await ws.send_str('420["join_timeslot",1]')
        joined = await ws.receive_str()
        assert joined.startswith("430["), joined
        assert json.loads(joined[3:])[0]["success"], joined
        self.reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            text: str = message.data
            if text == "2":  # Engine.IO ping
                await ws.send_str("3")
            elif text.startswith("42["):
                event, data = json.loads(text[2:])
                if event == "timeslot_update":
                    self.tally.received(data)

    async def disconnect(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader


class _SioClient:
    """python-socketio's ``AsyncClient``, as a Python app would connect."""

    def __init__(self, session: aiohttp.ClientSession, tally: _Tally) -> None:
        self.client = socketio.AsyncClient(reconnection=False, http_session=session)

        async def on_update(data: dict[str, Any]) -> None:
            tally.received(data)

        self.client.on("timeslot_update", on_update)

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    async def connect(self, url: str, token: str) -> None:
        await self.client.connect(
            url, auth={"token": token}, transports=["websocket"], wait_timeout=60
        )
        answer = await self.client.call("join_timeslot", 1, timeout=60)
        assert answer["success"], answer

    async def disconnect(self) -> None:
        await self.client.disconnect()


async def _clients(kind: str, url: str, token: str, count: int, rounds: int) -> None:
    """Connect ``count`` clients, then report each round and finally every latency.

    Protocol on stdout, one line each: ``ready <seconds>``, ``got <round>``
    per completed round, ``latencies <json list of ns>``. Rounds are read from
    the events themselves; stdin is not used.
    """
    tally = _Tally(count, rounds)
    make = _RawClient if kind == "raw" else _SioClient
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [make(session, tally) for _ in range(count)]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(client: _RawClient | _SioClient) -> None:
            async with gate:
                await client.connect(url, token)

        started = time.perf_counter()
        await asyncio.gather(*(connect(c) for c in clients))
        print(f"ready {time.perf_counter() - started:.6f}", flush=True)
        for r in range(rounds):
            # A round is over when every client still connected has the event; a
            # client the loaded machine lost is counted, not waited for.
            deadline = time.monotonic() + 60
            while not tally.done[r].is_set():
                lost = sum(not c.connected for c in clients)
                if tally.per_round[r] >= count - lost:
                    break
                if time.monotonic() > deadline:
                    print(f"lost round {r}: {tally.per_round[r]}/{count} got it, {lost} dropped")
                    raise TimeoutError(f"round {r} incomplete")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.done[r].wait(), timeout=0.1)
            print(f"got {r}", flush=True)
        print(f"latencies {json.dumps(tally.latencies)}", flush=True)
        print(f"dropped {sum(not c.connected for c in clients)}", flush=True)
        await asyncio.gather(*(c.disconnect() for c in clients))


def client_main(argv: Sequence[str]) -> None:
    kind, url, token, count, rounds = argv
    asyncio.run(_clients(kind, url, token, int(count), int(rounds)))


# ---------------------------------------------------------------- the run


@contextmanager
def _api(env: dict[str, str], *, workers: int) -> Iterator[str]:
    port = free_port()
    cli = os.path.join(os.path.dirname(sys.executable), "gridclear-cloud")
    process = subprocess.Popen(
        [cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        time.sleep(1.0 * workers)  # let every worker finish starting
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _ClientProcess:
    def __init__(self, kind: str, url: str, token: str, count: int, rounds: int) -> None:
        self.count = count
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_realtime", "client", kind, url, token,
             str(count), str(rounds)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def expect(self, word: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(word + " "):
            self.process.kill()
            raise RuntimeError(f"client process said {line!r}, expected {word!r}")
        return line[len(word) + 1 :].strip()

    def close(self) -> None:
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _percentile(sorted_values: Sequence[int], p: float) -> float:
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return float(sorted_values[index])


async def _fan_out(
    url: str,
    token: str,
    publisher: EventPublisher,
    *,
    kind: str,
    clients: int,
    rounds: int,
    procs: int = CLIENT_PROCESSES,
) -> dict[str, float]:
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [_ClientProcess(kind, url, token, n, rounds) for n in shares if n]
    loop = asyncio.get_running_loop()
    try:
        # Measured inside the client processes: their start-up (imports) is not counted.
        connect_s = [float(await loop.run_in_executor(None, w.expect, "ready")) for w in workers]
        completions: list[float] = []
        for r in range(rounds):
            await asyncio.sleep(0.2)  # let the previous round's writes drain
            sent = time.monotonic_ns()
            await publisher.emit("timeslot_update", {"round": r, "sentNs": sent}, room=ROOM)
            for w in workers:
                assert await loop.run_in_executor(None, w.expect, "got") == str(r)
            completions.append((time.monotonic_ns() - sent) / 1e6)
        latencies: list[int] = []
        dropped = 0
        for w in workers:
            latencies += json.loads(await loop.run_in_executor(None, w.expect, "latencies"))
            dropped += int(await loop.run_in_executor(None, w.expect, "dropped"))
    finally:
        for w in workers:
            await loop.run_in_executor(None, w.close)
    latencies.sort()
    return {
        "dropped": dropped,
        "delivered": len(latencies) / (clients * rounds),
        "connect_s": max(connect_s),
        "p50_ms": _percentile(latencies, 50) / 1e6,
        "p99_ms": _percentile(latencies, 99) / 1e6,
        "max_ms": latencies[-1] / 1e6,
        # An upper bound: includes the client processes noticing and reporting the round.
        "last_client_ms": statistics.median(completions),
    }


async def _token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        signed = await http.post(
            "/api/auth/register",
            json={
                "email": f"bench-{uuid.uuid4().hex[:8]}@example.org",
                "password": "a long bench passphrase",
            },
        )
        signed.raise_for_status()
        token: str = signed.json()["data"]["accessToken"]
        return token


async def _disconnects(base: str) -> dict[str, float]:
    """The server's ``gridclear_realtime_disconnects_total`` by reason (one worker's)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        text = (await http.get("/metrics")).text
    found = {}
    for line in text.splitlines():
        if line.startswith("gridclear_realtime_disconnects_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


async def _scenarios(
    ctx: BenchContext, env: dict[str, str], base: str, *, workers: int
) -> list[Figure]:
    clients = 200 if ctx.quick else 5_000
    rounds = 3 if ctx.quick else 20
    token = await _token(base)
    tag = f"{workers} worker" + ("s" if workers > 1 else "")
    short = f"{workers}w"
    figures: list[Figure] = []
    async with EventPublisher.from_redis_url(
        env["GRIDCLEAR_REDIS_URL"], key_prefix=env["GRIDCLEAR_REDIS_KEY_PREFIX"]
    ) as publisher:
        # The heavier python-socketio clients first, on a server nobody has used yet.
        kinds = ["sio", "raw"] if workers == 1 else ["raw"]
        if workers == 1:
            one = await _fan_out(
                base, token, publisher, kind="raw", clients=1, rounds=rounds * 5, procs=1
            )
            figures += [
                Figure("baseline: 1 client p50", one["p50_ms"], "ms", "raw client, same path"),
                Figure("baseline: 1 client p99", one["p99_ms"], "ms", "raw client, same path"),
            ]
        for kind in kinds:
            await asyncio.sleep(3)  # let the server finish closing the previous clients
            who = {"raw": "raw WebSocket clients", "sio": "python-socketio AsyncClients"}[kind]
            note = f"{clients:,} {who}, {tag}"
            label = f"{kind}/{short}"
            try:
                many = await _fan_out(
                    base, token, publisher, kind=kind, clients=clients, rounds=rounds
                )
            except Exception as exc:
                # A scenario that cannot finish on a loaded machine is a finding too.
                print(f"  {label} did not finish: {exc}", flush=True)
                figures.append(Figure(f"{label}: did not finish", 1, "", f"{note}: {exc}"[:160]))
                continue
            finally:
                print(f"  {label}: disconnects seen by the server {await _disconnects(base)}")
            figures += [
                Figure(f"{label}: connect time", many["connect_s"], "s", f"{note}; auth + join"),
                Figure(f"{label}: connect rate", clients / many["connect_s"], "clients/s", note),
                Figure(f"{label}: delivery p50", many["p50_ms"], "ms", f"{note}, {rounds} events"),
                Figure(f"{label}: delivery p99", many["p99_ms"], "ms", f"{note}, {rounds} events"),
                Figure(f"{label}: delivery max", many["max_ms"], "ms", f"{note}, {rounds} events"),
                Figure(
                    f"{label}: last client has it", many["last_client_ms"], "ms", "median of events"
                ),
                Figure(f"{label}: clients dropped", many["dropped"], "clients", note),
                Figure(f"{label}: delivered", 100 * many["delivered"], "%", "of clients x events"),
            ]
    return figures


def run(ctx: BenchContext) -> list[Figure]:
    with ctx.fresh_database("bench_rt") as database_url:
        migrate(database_url)
        env = {
            **os.environ,
            "GRIDCLEAR_DATABASE_URL": database_url,
            "GRIDCLEAR_REDIS_URL": ctx.redis_url,
            "GRIDCLEAR_REDIS_KEY_PREFIX": f"bench:rt:{uuid.uuid4().hex[:8]}:",
            "GRIDCLEAR_JWT_PRIVATE_KEY": generate_signing_key_pem(),
            # 5,000 connects from one address: limits on, but out of reach.
            "GRIDCLEAR_RATE_LIMITS": (
                '{"auth": "10000000/minute", "account": "10000000/minute",'
                ' "api": "10000000/minute", "identity": "10000000/minute"}'
            ),
            "GRIDCLEAR_ARGON2_TIME_COST": "1",
            "GRIDCLEAR_ARGON2_MEMORY_KIB": "1024",
            "GRIDCLEAR_LOG_LEVEL": "WARNING",
        }
        figures: list[Figure] = []
        for workers in (1, 2):
            with _api(env, workers=workers) as base:
                figures += asyncio.run(_scenarios(ctx, env, base, workers=workers))
        one = next(f.value for f in figures if f.name == "baseline: 1 client p50")
        for kind in ("raw/1w", "sio/1w", "raw/2w"):
            p99 = next((f.value for f in figures if f.name == f"{kind}: delivery p99"), None)
            if p99 is None:
                continue
            figures.append(
                Figure(f"{kind}: p99 / 1-client p50", p99 / one, "x", "the cost of the fan-out")
            )
        return figures


if __name__ == "__main__" and sys.argv[1:2] == ["client"]:
    client_main(sys.argv[2:])
