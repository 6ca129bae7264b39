"""``gridclear-cloud scheduler``: run the market's scheduler until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import datetime

from gridclear.cloud import env
from gridclear.cloud.market.clock import MarketClock

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
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"wall seconds between ticks (default: {env.SCHEDULER_INTERVAL_S} or 1)",
    )
    parser.set_defaults(handler=_run)


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    from gridclear.cloud.api.logs import configure_logging

    url = os.environ.get(env.DATABASE_URL)
    if not url:
        return _fail(f"set {env.DATABASE_URL}")
    try:
        speed = float(args.speed or os.environ.get(env.MARKET_SPEED) or 1.0)
        interval = float(args.interval or os.environ.get(env.SCHEDULER_INTERVAL_S) or 1.0)
        epoch_text = args.epoch or os.environ.get(env.MARKET_EPOCH)
        epoch = datetime.fromisoformat(epoch_text) if epoch_text else None
        if not 0.01 <= interval <= 3600:
            raise ValueError("the interval must be 0.01 to 3600 seconds")
        clock = MarketClock(speed=speed) if epoch is None else MarketClock(speed, epoch)
    except ValueError as exc:
        return _fail(str(exc))
    configure_logging(
        level=os.environ.get(env.LOG_LEVEL, "INFO"),
        fmt="text" if os.environ.get(env.LOG_FORMAT) == "text" else "json",
    )
    asyncio.run(
        _serve(
            url,
            clock,
            interval,
            os.environ.get(env.REDIS_URL),
            os.environ.get(env.REDIS_KEY_PREFIX, "gridclear:"),
        )
    )
    return 0


async def _serve(
    url: str, clock: MarketClock, interval: float, redis_url: str | None, prefix: str
) -> None:
    from gridclear.cloud.market.scheduler import Scheduler
    from gridclear.cloud.realtime import EventPublisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    events = EventPublisher.from_redis_url(redis_url, key_prefix=prefix) if redis_url else None
    try:
        await Scheduler(database_url=url, clock=clock, events=events, interval_s=interval).run(stop)
    finally:
        if events is not None:
            await events.aclose()
