"""The ``ingest`` and ``devices`` subcommands of ``gridclear-cloud``."""

from __future__ import annotations

import argparse
import asyncio
import enum
import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from gridclear.cloud import env

if TYPE_CHECKING:
    from gridclear.cloud.ingest.worker import WorkerConfig

__all__ = ["add_ingest_commands"]

_T = TypeVar("_T")


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
    """Add ``ingest`` and ``devices`` to the ``gridclear-cloud`` parser."""
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
    _add_devices_command(commands)


def _add_devices_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = commands.add_parser("devices", help="register gateways, keys and meters")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="register a gateway; prints a one-time enrolment token (or registers --public-key)",
    )
    add.add_argument("--device-id", required=True)
    add.add_argument("--name", default=None)
    add.add_argument("--site", default=None, help="site name (created on first use)")
    add.add_argument(
        "--public-key",
        default=None,
        help="register this base64url Ed25519 key, no enrolment; write --public-key=KEY,"
        " since a key may begin with '-'",
    )
    add.add_argument("--token-ttl-hours", type=float, default=24.0)
    add.add_argument("--exist-ok", action="store_true", help="an existing device is not an error")
    add.add_argument("--token-only", action="store_true", help="print only the token")
    add.set_defaults(handler=_devices_add)

    token = actions.add_parser(
        "token",
        help="issue a new one-time enrolment token (earlier unused ones stop working)",
    )
    token.add_argument("--device-id", required=True)
    token.add_argument("--token-ttl-hours", type=float, default=24.0)
    token.set_defaults(handler=_devices_token)

    rotate = actions.add_parser(
        "rotate",
        help="replace a gateway's key: register --public-key, or issue a rotation token "
        "the gateway enrols its new key with; the old key stays valid for what it signed before",
    )
    rotate.add_argument("--device-id", required=True)
    rotate.add_argument(
        "--public-key",
        default=None,
        help="register this base64url Ed25519 key (write --public-key=KEY); without it, print "
        "a one-time rotation token (valid 24 h) for gridclear-edge enrol",
    )
    rotate.set_defaults(handler=_devices_rotate)

    revoke = actions.add_parser("revoke", help="refuse what a key signs from a time on")
    revoke.add_argument("--kid", required=True)
    revoke.add_argument(
        "--at",
        type=datetime.fromisoformat,
        default=None,
        help="ISO time from which its signatures are refused (default: now)",
    )
    revoke.add_argument("--reason", default=None)
    revoke.set_defaults(handler=_devices_revoke)

    show = actions.add_parser(
        "list",
        help="list gateways with status and chain health (GET /api/devices's fields)",
    )
    show.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    show.set_defaults(handler=_devices_list)

    meter = actions.add_parser("meter", help="bind a meter to an owner and a role")
    meter.add_argument("--device-id", required=True)
    meter.add_argument("--meter", required=True, help="the meter's name in the readings")
    meter.add_argument("--owner-id", type=int, default=None, help="user id of the owner")
    meter.add_argument("--role", choices=["import", "export", "both"], default="import")
    meter.add_argument("--serial", default=None)
    meter.add_argument("--model", default=None)
    meter.add_argument("--json", action="store_true", help="a JSON object instead of a table")
    meter.set_defaults(handler=_devices_meter)


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


def _db(func: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run ``func(conn)`` on a connection to GRIDCLEAR_DATABASE_URL."""
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    from gridclear.cloud.settings import DatabaseSettings, SettingsError

    try:
        url = DatabaseSettings.load().database()
    except SettingsError as exc:
        raise SystemExit(f"gridclear-cloud devices: {exc}") from None

    async def main() -> _T:
        async with await AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await func(conn)

    return asyncio.run(main())


def _fail(error: Exception) -> int:
    print(f"gridclear-cloud devices: {error}", file=sys.stderr)
    return 1


def _api_fields(item: Any, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """A registry record as the API shows it: camelCase names, RFC 3339 UTC times.

    The names come from the same alias generator as the API's models, so a listing
    here and the API's response for the same rows have the same fields.
    """
    from pydantic.alias_generators import to_camel

    shown: dict[str, Any] = {}
    for name, value in asdict(item).items():
        if name in without:
            continue
        if isinstance(value, datetime):
            shown[to_camel(name)] = _rfc3339(value)
        elif isinstance(value, enum.Enum):
            shown[to_camel(name)] = value.value
        else:
            shown[to_camel(name)] = value
    return shown


def _rfc3339(moment: datetime) -> str:
    """``2026-05-04T10:00:00.123456Z``: UTC, as the API writes times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _print_rows(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    """``rows`` as a JSON list, or as a table with the field names as its header."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    header = list(rows[0])
    cells = [["-" if row[k] is None else str(row[k]) for k in header] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _devices_add(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        try:
            await devices.create_device(
                conn, device_id=args.device_id, name=args.name, site=args.site
            )
        except devices.DeviceExistsError:
            if not args.exist_ok:
                raise
        if args.public_key:
            try:
                key = await devices.add_key(
                    conn, device_id=args.device_id, public_key=args.public_key
                )
            except devices.KeyConflictError as exc:
                if not (args.exist_ok and "this device" in str(exc)):
                    raise
                print(f"device {args.device_id}: key already registered")
                return 0
            print(f"device {args.device_id}: key {key.kid} registered")
            return 0
        token = await devices.issue_enrolment_token(
            conn, device_id=args.device_id, ttl=timedelta(hours=args.token_ttl_hours)
        )
        if args.token_only:
            print(token.token)
        else:
            print(f"device {args.device_id} created; one-time enrolment token:")
            print(f"  {token.token}")
            print(f"valid until {token.expires_at.isoformat()}. On the gateway run:")
            print(f"  gridclear-edge enrol --url https://<cloud> --token {token.token} --config …")
        return 0

    return _guarded(run)


def _guarded(run: Callable[[Any], Awaitable[int]]) -> int:
    from gridclear.cloud.devices import DeviceError

    try:
        return _db(run)
    except DeviceError as exc:
        return _fail(exc)


def _devices_token(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        token = await devices.issue_enrolment_token(
            conn, device_id=args.device_id, ttl=timedelta(hours=args.token_ttl_hours)
        )
        print(token.token)
        return 0

    return _guarded(run)


def _devices_rotate(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        if args.public_key is None:
            token = await devices.issue_enrolment_token(
                conn, device_id=args.device_id, rotation=True
            )
            print(f"device {args.device_id}: one-time rotation token (replaces the current key):")
            print(f"  {token.token}")
            print(f"valid until {token.expires_at.isoformat()}. On the gateway, with its new key:")
            print(f"  gridclear-edge enrol --url https://<cloud> --token {token.token} --config …")
            return 0
        key = await devices.rotate_key(conn, device_id=args.device_id, public_key=args.public_key)
        print(f"device {args.device_id}: key {key.kid} registered; earlier keys retired")
        return 0

    return _guarded(run)


def _devices_revoke(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        key = await devices.revoke_key(conn, kid=args.kid, at=args.at, reason=args.reason)
        print(f"key {key.kid} of {key.device_id} revoked from {key.revoked_at}")
        return 0

    return _guarded(run)


def _devices_list(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        found = await devices.list_devices(conn, limit=10_000)
        # GET /api/devices's fields: the database's row id is not one of them.
        _print_rows([_api_fields(d, without=("id",)) for d in found], as_json=args.json)
        return 0

    return _guarded(run)


def _devices_meter(args: argparse.Namespace) -> int:
    from gridclear.cloud import devices

    async def run(conn: Any) -> int:
        meter = await devices.bind_meter(
            conn,
            device_id=args.device_id,
            name=args.meter,
            owner_id=args.owner_id,
            role=devices.MeterRole(args.role),
            serial=args.serial,
            model=args.model,
        )
        rows = [_api_fields(meter)]  # GET /api/meters's fields
        if args.json:
            print(json.dumps(rows[0], indent=2))
        else:
            _print_rows(rows, as_json=False)
        return 0

    return _guarded(run)
