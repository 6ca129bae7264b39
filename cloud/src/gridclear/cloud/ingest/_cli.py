"""The ``ingest`` and ``devices`` subcommands of ``gridclear-cloud``."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from typing import TYPE_CHECKING

from gridclear.cloud import env

if TYPE_CHECKING:
    from gridclear.cloud.ingest.worker import WorkerConfig

__all__ = ["add_ingest_commands"]


def _settings(args: argparse.Namespace) -> tuple[str, str]:
    """``(database_url, mqtt_url)`` from the settings and options; logging configured.

    Exits with the settings' message when the configuration is unusable (production
    refuses missing URLs and an MQTT URL without credentials).
    """
    from gridclear.cloud.logs import configure_logging
    from gridclear.cloud.settings import IngestSettings, SettingsError

    try:
        settings = IngestSettings.load(database_url=args.database_url, mqtt_url=args.mqtt_url)
        urls = settings.urls()
    except SettingsError as exc:
        raise SystemExit(f"gridclear-cloud ingest: {exc}") from None
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return urls


def _client_id(value: str) -> str:
    from gridclear.cloud.ingest.worker import check_client_id

    try:
        return check_client_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ingest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ingest`` to the ``gridclear-cloud`` parser."""
    from gridclear.cloud.ingest.worker import WorkerConfig, default_client_id

    defaults = WorkerConfig(database_url="", mqtt_url="", client_id="")
    ingest = commands.add_parser(
        "ingest",
        help="run an ingest worker: verified readings from MQTT into PostgreSQL",
        description=(
            "Subscribe to the gateways' readings through an MQTT shared subscription, "
            "verify every signed message, store readings and raw messages in batches and "
            "acknowledge each message only after its rows are committed. Run several with "
            "the same --group (and different --client-id) to divide the load. Reads "
            f"{env.DATABASE_URL} and {env.MQTT_URL} unless the options are given."
        ),
    )
    ingest.add_argument("--database-url", default=None, help=f"default: ${env.DATABASE_URL}")
    ingest.add_argument("--mqtt-url", default=None, help=f"default: ${env.MQTT_URL}")
    ingest.add_argument(
        "--group", default=defaults.group, help="shared subscription group (default: %(default)s)"
    )
    ingest.add_argument(
        "--client-id",
        type=_client_id,
        default=None,
        help=(
            "MQTT client id; unique per worker and stable across restarts, so the broker "
            "redelivers what a stopped worker did not acknowledge, and with a ':' so that "
            "it can never be a gateway's device id (default: gridclear-cloud:ingest-<hostname>)"
        ),
    )
    ingest.add_argument(
        "--topic-prefix", default="", help="text in front of every topic (tests, staging)"
    )
    ingest.add_argument("--batch-max", type=int, default=defaults.batch_max)
    _add_session_options(ingest, defaults)
    _add_bounds(ingest, defaults)
    ingest.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    ingest.add_argument(
        "--gc-interval-s",
        type=float,
        default=10.0,
        help="seconds between garbage collections, run on a timer instead of Python's"
        " automatic ones (0: leave Python's on; default: %(default)s)",
    )
    ingest.add_argument(
        "--migrate", action="store_true", help="apply pending migrations before starting"
    )
    ingest.set_defaults(handler=_ingest, default_client_id=default_client_id)


def _add_session_options(ingest: argparse.ArgumentParser, defaults: WorkerConfig) -> None:
    """The broker session: how much it may hold, how a worker leaves its group
    (docs/INGEST.md, section 3, Scaling down)."""
    ingest.add_argument("--receive-maximum", type=int, default=defaults.receive_maximum)
    ingest.add_argument(
        "--leave-timeout-s",
        type=float,
        default=defaults.leave_timeout_s,
        help="on SIGTERM or SIGINT, how long to go on committing what the broker had assigned"
        " to this worker before disconnecting; a worker that could not finish keeps its"
        " session (default: %(default)s)",
    )
    ingest.add_argument(
        "--leave",
        action="store_true",
        help="do not take part: resume the session of --client-id (a worker that vanished),"
        " store and acknowledge what the broker queued for it, end the session and exit",
    )


def _add_bounds(ingest: argparse.ArgumentParser, defaults: WorkerConfig) -> None:
    """Interval upkeep, and the options that bound what one message or refresh can cost."""
    _add_quarantine_options(ingest, defaults)
    ingest.add_argument(
        "--interval-refresh-s",
        type=float,
        default=defaults.interval_refresh_s,
        help="seconds between interval energy updates (0: never; default: %(default)s)",
    )
    ingest.add_argument(
        "--interval-refresh-slots",
        type=int,
        default=defaults.refresh_slots,
        help="slots one interval refresh walks at most, the rest waits (default: %(default)s)",
    )
    ingest.add_argument(
        "--interval-max-span-days",
        type=float,
        default=defaults.max_span_ms / 86_400_000,
        help="longest gap between a meter's samples that interval energy is interpolated"
        " over; slots in a longer gap get none (default: %(default)s)",
    )
    ingest.add_argument(
        "--max-clock-ahead-s",
        type=float,
        default=defaults.time_window.max_ahead_ms / 1000,
        help="how far after its receipt (or signing) a message's times may lie;"
        " later ones are quarantined as implausible_time (default: %(default)s)",
    )
    ingest.add_argument(
        "--max-reading-age-days",
        type=float,
        default=defaults.time_window.max_age_ms / 86_400_000,
        help="how far before its receipt (or signing) a reading may lie, outbox backlogs"
        " included; older ones are quarantined as implausible_time (default: %(default)s)",
    )


def _add_quarantine_options(ingest: argparse.ArgumentParser, defaults: WorkerConfig) -> None:
    ingest.add_argument(
        "--quarantine-cap",
        type=int,
        default=defaults.quarantine_cap,
        help="quarantine rows kept per device and window; refusals over it are only counted"
        " (default: %(default)s)",
    )
    ingest.add_argument(
        "--quarantine-window-s",
        type=float,
        default=defaults.quarantine_window_s,
        help="the window of --quarantine-cap, seconds (default: %(default)s)",
    )


def _ingest(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from gridclear.cloud.ingest.plausibility import TimeWindow
    from gridclear.cloud.ingest.worker import IngestWorker, WorkerConfig
    from gridclear.cloud.storage.migrations import migrate

    database_url, mqtt_url = _settings(args)
    config = WorkerConfig(
        database_url=database_url,
        mqtt_url=mqtt_url,
        client_id=args.client_id or args.default_client_id(),
        group=args.group,
        topic_prefix=args.topic_prefix,
        batch_max=args.batch_max,
        receive_maximum=args.receive_maximum,
        interval_refresh_s=args.interval_refresh_s,
        refresh_slots=args.interval_refresh_slots,
        max_span_ms=round(args.interval_max_span_days * 86_400_000),
        time_window=TimeWindow(
            max_ahead_ms=round(args.max_clock_ahead_s * 1000),
            max_age_ms=round(args.max_reading_age_days * 86_400_000),
        ),
        quarantine_cap=args.quarantine_cap,
        quarantine_window_s=args.quarantine_window_s,
        leave_timeout_s=args.leave_timeout_s,
    )
    if args.migrate:
        migrate(database_url)
    worker = IngestWorker(config)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=worker.metrics.registry)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        # The first signal leaves the group gracefully, a second one stops at once.
        if stop.is_set():
            worker.abandon()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    logging.getLogger(__name__).info(
        "ingest worker %s in group %s: %s", config.client_id, config.group, worker.readings_filter
    )
    if args.gc_interval_s > 0:
        threading.Thread(
            target=_collect_on_a_timer, args=(stop, args.gc_interval_s), name="gc", daemon=True
        ).start()
    worker.run(stop, leave_at_once=args.leave)
    return 0


def _collect_on_a_timer(stop: threading.Event, every_s: float) -> None:
    """Python's cyclic garbage collection every ``every_s`` instead of by allocation count.

    A worker holds a few batches of parsed messages (tens of thousands of objects with
    50 readings per message) and allocates as many again per batch; the automatic
    collector then keeps traversing all of them, which measured a third of the
    worker's CPU with 50 readings per message. Almost nothing here forms reference
    cycles (whatever does is freed at the next timed collection), so the automatic
    collector is switched off and a full collection runs on this timer instead.
    """
    gc.collect()
    gc.freeze()  # what start-up created stays: not traversed again
    gc.disable()
    while not stop.wait(every_s):
        gc.collect()
