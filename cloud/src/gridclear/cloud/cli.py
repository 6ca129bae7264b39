"""The ``gridclear-cloud`` command: run and operate the cloud clearing service."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from gridclear.cloud import __version__
from gridclear.cloud.devices._cli import add_devices_command
from gridclear.cloud.ingest._cli import add_ingest_commands
from gridclear.cloud.ledger._cli import add_ledger_commands
from gridclear.cloud.market._cli import add_market_commands
from gridclear.cloud.market._scheduler_cli import add_scheduler_command
from gridclear.cloud.settlement._cli import add_settlement_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-cloud",
        description=(
            "gridclear cloud: verifies and stores signed meter readings, serves the REST "
            "and Socket.IO API, clears a double auction for every delivery slot and "
            "settles on Solana."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_api_commands(commands)
    add_market_commands(commands)
    add_scheduler_command(commands)
    add_ingest_commands(commands)
    add_devices_command(commands)
    add_settlement_commands(add_ledger_commands(commands))
    return parser


def _add_api_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the REST API (uvicorn)",
        description=(
            "Serve the REST API. Configuration comes from GRIDCLEAR_* environment "
            "variables (docs/API.md); GRIDCLEAR_DATABASE_URL and GRIDCLEAR_REDIS_URL are "
            "required. The database must be migrated (see `migrate`, or --migrate)."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.add_argument(
        "--migrate", action="store_true", help="apply pending migrations before serving"
    )
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description=(
            "Apply the pending SQL migrations to GRIDCLEAR_DATABASE_URL, in order. Safe to "
            "run again and from several machines at once (an advisory lock serialises them)."
        ),
    )
    migrate.add_argument(
        "--storage",
        choices=("auto", "plain", "timescaledb"),
        default=None,
        help=(
            "the storage path on purpose: plain tables even where TimescaleDB is installed, "
            "or TimescaleDB or nothing (default: the database's gridclear.storage setting, "
            "else auto: TimescaleDB when the server offers it)"
        ),
    )
    migrate.set_defaults(handler=_migrate)

    admin = commands.add_parser("admin", help="administer accounts")
    admin_commands = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = admin_commands.add_parser(
        "create",
        help="create an admin account (the first one, typically)",
        description=(
            "Create an admin account in GRIDCLEAR_DATABASE_URL. The password is read from "
            "--password-file, else from GRIDCLEAR_ADMIN_PASSWORD, else prompted for twice."
        ),
    )
    create.add_argument("--email", required=True, help="the admin's email (their login)")
    create.add_argument("--display-name", default=None, help="name shown in the apps")
    create.add_argument(
        "--password-file", type=Path, default=None, help="read the password from this file"
    )
    create.add_argument(
        "--promote-existing",
        action="store_true",
        help="if the email has an account, make it admin (its password is kept)",
    )
    create.set_defaults(handler=_admin_create)


def _serve(args: argparse.Namespace) -> int:
    from gridclear.cloud.api.serve import serve

    return serve(host=args.host, port=args.port, workers=args.workers, migrate_first=args.migrate)


def _migrate(args: argparse.Namespace) -> int:
    import logging
    import os
    import sys

    from gridclear.cloud import env
    from gridclear.cloud.logs import configure_logging
    from gridclear.cloud.settings import ProcessSettings, SettingsError
    from gridclear.cloud.storage.migrations import MigrationError, migrate

    try:
        # The same log lines as every other process (JSON by default), on stderr; the
        # result stays on stdout for whoever runs the command by hand.
        logs = ProcessSettings.load()
    except SettingsError as exc:
        print(f"gridclear-cloud migrate: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=logs.log_level, fmt=logs.log_format)
    log = logging.getLogger("gridclear.cloud.migrate")
    url = os.environ.get(env.DATABASE_URL)
    if not url:
        print(f"gridclear-cloud migrate: set {env.DATABASE_URL}", file=sys.stderr)
        return 2
    try:
        applied = migrate(url, storage=args.storage)
    except MigrationError as exc:
        # One line, for the person or the job that runs it: a log record as well would
        # say the same thing twice on the same stream.
        print(f"gridclear-cloud migrate: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    log.info("migrations applied: %s", names if names else "none, the database is up to date")
    if not applied:
        print("the database is up to date")
    return 0


def _admin_create(args: argparse.Namespace) -> int:
    import sys

    from gridclear.cloud.identity.bootstrap import BootstrapError, create_admin, read_password
    from gridclear.cloud.settings import Settings, SettingsError

    try:
        settings = Settings.load()
        password = None if args.promote_existing else read_password(args.password_file)
        user_id = create_admin(
            settings=settings,
            email=args.email,
            password=password or "",
            display_name=args.display_name,
            promote_existing=args.promote_existing,
        )
    except (BootstrapError, SettingsError) as exc:
        print(f"gridclear-cloud admin create: {exc}", file=sys.stderr)
        return 1
    print(f"admin account {user_id} ready for {args.email.strip().lower()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
