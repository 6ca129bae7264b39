"""The node's HTTP side: JSON-RPC on ``POST /``, ``GET /health`` and ``GET /metrics``, under uvicorn.

:func:`serve_node` loads the ledger (:class:`~.engine.LedgerEngine`), serves until
SIGINT or SIGTERM (uvicorn's own graceful shutdown: requests in flight are
answered), then lets the SVM thread finish its queue and commit before it returns.
A ledger that fails (a commit error) stops the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gridclear.cloud.ledger.node.engine import LedgerEngine
from gridclear.cloud.ledger.node.rpc import RpcContext, handle_body

__all__ = ["NodeConfig", "build_app", "serve_node"]

log = logging.getLogger(__name__)

_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """How to run a node: where to listen, where its state lives, its block time, ``dev``."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8899
    tick_s: float = 0.4
    dev: bool = False
    ready_file: Path | None = None


class _EngineCollector(Collector):
    def __init__(self, engine: LedgerEngine) -> None:
        self._engine = engine

    def collect(self):  # type: ignore[no-untyped-def]  # prometheus_client's own signature
        stats = self._engine.stats
        latest = self._engine.latest
        transactions = CounterMetricFamily(
            "gridclear_ledger_transactions",
            "Transactions sent to the node, by outcome",
            labels=["outcome"],
        )
        transactions.add_metric(["landed"], stats.landed)
        transactions.add_metric(["landed_with_error"], stats.landed_failed)
        transactions.add_metric(["dropped"], stats.dropped)
        transactions.add_metric(["preflight_failed"], stats.preflight_failed)
        yield transactions
        yield CounterMetricFamily(
            "gridclear_ledger_commits", "Group commits of the ledger's state", value=stats.commits
        )
        yield GaugeMetricFamily(
            "gridclear_ledger_slot", "The latest committed slot", value=latest.slot if latest else 0
        )
        sizes = stats.batch_sizes[-100:]
        yield GaugeMetricFamily(
            "gridclear_ledger_batch_size",
            "Mean number of writes per group commit over the last 100 batches",
            value=sum(sizes) / len(sizes) if sizes else 0.0,
        )


def build_app(engine: LedgerEngine, *, dev: bool) -> Starlette:
    """The node's ASGI app over a started engine."""
    context = RpcContext(engine=engine, dev=dev)
    registry = CollectorRegistry()
    registry.register(_EngineCollector(engine))

    async def rpc(request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_BODY_BYTES:
            return Response(status_code=413)
        return Response(await handle_body(context, body), media_type="application/json")

    async def health(request: Request) -> Response:
        if engine.healthy:
            return PlainTextResponse("ok")
        return PlainTextResponse("unhealthy", status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/", rpc, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


def _write_ready_file(path: Path, description: dict[str, object]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(description) + "\n")
    temporary.replace(path)


async def _serve(config: NodeConfig) -> None:
    import uvicorn

    loop = asyncio.get_running_loop()
    server: uvicorn.Server | None = None

    def fatal(exc: BaseException) -> None:
        def stop() -> None:
            if server is not None:
                server.should_exit = True

        loop.call_soon_threadsafe(stop)

    engine = LedgerEngine(state_dir=config.state_dir, tick_s=config.tick_s, on_fatal=fatal)
    await asyncio.to_thread(engine.start)
    try:
        # Bound here so that port 0 works: the ready file says which port was chosen.
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP, and without it every answer waits for a delayed ACK (about 40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        port = sock.getsockname()[1]
        uvicorn_config = uvicorn.Config(
            build_app(engine, dev=config.dev),
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(uvicorn_config)
        active = server

        def request_exit(signum: int, frame: object) -> None:
            active.should_exit = True

        # uvicorn restores the handlers it found and then raises the signal it caught
        # again; with ours in place that stops nothing twice, and the engine below
        # still gets its last commit (the default handler would kill us first).
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, request_exit)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            url = f"http://{config.host if family == socket.AF_INET else f'[{config.host}]'}:{port}"
            log.info(
                "ledger node serving JSON-RPC on %s (state in %s%s)",
                url,
                config.state_dir,
                ", dev: requestAirdrop served" if config.dev else "",
            )
            if config.ready_file is not None:
                _write_ready_file(config.ready_file, {"url": url, "pid": _pid()})
        await serving
    finally:
        await asyncio.to_thread(engine.stop)
        log.info("ledger node stopped at slot %s", engine.latest.slot if engine.latest else None)


def _pid() -> int:
    import os

    return os.getpid()


def serve_node(config: NodeConfig) -> None:
    """Serve until SIGINT or SIGTERM (the ledger is committed and closed on the way out)."""
    asyncio.run(_serve(config))
