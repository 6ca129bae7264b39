"""``gridclear-cloud scheduler``: run the market's scheduler until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from gridclear.cloud import env
from gridclear.cloud.market.clock import MarketClock

if TYPE_CHECKING:
    from gridclear.cloud.market.metrics import SchedulerMetrics
    from gridclear.cloud.settings import SchedulerSettings
    from gridclear.cloud.settlement.service import SettlementService

__all__ = ["add_scheduler_command"]

_PROG = "gridclear-cloud scheduler"


def add_scheduler_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scheduler`` to the top-level subcommands."""
    parser = commands.add_parser(
        "scheduler",
        help="open, close, clear and hand over delivery slots on time",
        description=(
            "Create delivery slots ahead, open them, close them at gate closure, clear "
            "them and move them to settling after delivery, publishing each change in "
            "real time. Several may run: one acts (a PostgreSQL advisory lock), the "
            f"others stand by. Needs {env.DATABASE_URL}; publishes events through "
            f"{env.REDIS_URL} when set."
        ),
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"market time acceleration, e.g. 60 (default: {env.MARKET_SPEED} or 1)",
    )
    parser.add_argument(
        "--epoch",
        default=None,
        metavar="RFC3339",
        help=f"market time to start from when accelerated (default: {env.MARKET_EPOCH} or now)",
    )
    parser.add_argument(
        "--epoch-at",
        default=None,
        metavar="RFC3339",
        help=(
            "the wall-clock time at which market time was --epoch, so that processes"
            " given the same --speed, --epoch and --epoch-at share one clock"
            f" (default: {env.MARKET_EPOCH_AT} or the scheduler's start)"
        ),
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"wall seconds between ticks (default: {env.SCHEDULER_INTERVAL_S} or 1)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port (all interfaces; default: none)",
    )
    parser.set_defaults(handler=_run)


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    from gridclear.cloud.logs import configure_logging
    from gridclear.cloud.settings import SchedulerSettings, SettingsError

    try:
        settings = SchedulerSettings.load(
            speed=args.speed, epoch=args.epoch, epoch_at=args.epoch_at, interval_s=args.interval
        )
    except SettingsError as exc:
        return _fail(str(exc))
    if not settings.database_url:
        return _fail(f"set {env.DATABASE_URL}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    if settings.log_level != "DEBUG":
        # APScheduler logs every run of every job at INFO: once a second per job.
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    if settings.market_epoch is None:
        clock = MarketClock(speed=settings.market_speed)
    elif settings.market_epoch_at is None:
        clock = MarketClock(settings.market_speed, settings.market_epoch)
    else:
        clock = MarketClock.anchored(
            speed=settings.market_speed,
            epoch=settings.market_epoch,
            epoch_at=settings.market_epoch_at,
        )
    from gridclear.cloud.errors import GridclearCloudError

    try:
        settlement = _settlement(settings)
    except GridclearCloudError as exc:  # unset or unreadable key files
        return _fail(str(exc))
    from prometheus_client import CollectorRegistry

    from gridclear.cloud.market.metrics import SchedulerMetrics

    # One registry for the process: the scheduler's figures and its publisher's.
    registry = CollectorRegistry(auto_describe=True)
    metrics = SchedulerMetrics(registry)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, registry=registry)
        except OSError as exc:
            return _fail(f"cannot serve metrics on port {args.metrics_port}: {exc}")
    asyncio.run(_serve(settings, settings.database_url, clock, settlement, metrics))
    return 0


async def _serve(
    settings: SchedulerSettings,
    url: str,
    clock: MarketClock,
    settlement: SettlementService | None,
    metrics: SchedulerMetrics,
) -> None:
    from gridclear.cloud.market.scheduler import Scheduler
    from gridclear.cloud.realtime import EventPublisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed whatever the inherited disposition: a script's background job starts
    # with SIGINT ignored, and must still stop on it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    events = (
        EventPublisher.from_redis_url(
            settings.redis_url, key_prefix=settings.redis_key_prefix, registry=metrics.registry
        )
        if settings.redis_url
        else None
    )
    try:
        await Scheduler(
            database_url=url,
            clock=clock,
            events=events,
            interval_s=settings.scheduler_interval_s,
            settlement=settlement,
            metrics=metrics,
        ).run(stop)
    finally:
        if events is not None:
            await events.aclose()
        if settlement is not None:
            await settlement.ledger.close()


def _settlement(settings: SchedulerSettings) -> SettlementService | None:
    """The settlement jobs' service when GRIDCLEAR_SOLANA_RPC_URL is set (keys required)."""
    from gridclear.cloud.ledger.client import LedgerClient
    from gridclear.cloud.ledger.keys import load_key_file
    from gridclear.cloud.settlement.engine import FaultPoint
    from gridclear.cloud.settlement.metrics import SettlementMetrics
    from gridclear.cloud.settlement.service import SettlementService

    if settings.solana_rpc_url is None:
        logging.getLogger(__name__).info("settlement off: %s is not set", env.SOLANA_RPC_URL)
        return None
    oracle_file, authority_file = settings.key_files()
    return SettlementService(
        ledger=LedgerClient(settings.solana_rpc_url, commitment=settings.solana_commitment),
        oracle=load_key_file(oracle_file).keypair,
        authority=load_key_file(authority_file).keypair,
        fault=None if settings.settlement_fault is None else FaultPoint(settings.settlement_fault),
        metrics=SettlementMetrics(),
    )
