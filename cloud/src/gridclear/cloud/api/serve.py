"""``gridclear-cloud serve``: run the API under uvicorn (uvloop, httptools).

The server's own limits (request head size, head, body and keep-alive timeouts,
connections per process) come from the settings through
:mod:`gridclear.cloud.api.server_limits`; docs/OPERATIONS.md says what the
reverse proxy in front must add.

Settings are loaded and checked here, before any worker starts, so a bad
configuration stops the command with one clear message. With several workers
each process builds the app from the same environment; a development key
generated here is handed to them through it, so they accept each other's
tokens.
"""

from __future__ import annotations

import logging
import os
import sys

from gridclear.cloud import env
from gridclear.cloud.logs import configure_logging
from gridclear.cloud.settings import ProcessSettings, Settings, SettingsError

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(*, host: str, port: int, workers: int, migrate_first: bool = False) -> int:
    """Serve until interrupted; returns the exit code."""
    import uvicorn

    try:
        # Logging first, so that what loading the settings logs is in the same format.
        logs = ProcessSettings.load()
        configure_logging(level=logs.log_level, fmt=logs.log_format)
        settings = Settings.load()
    except SettingsError as exc:
        print(f"gridclear-cloud serve: {exc}", file=sys.stderr)
        return 2
    if not settings.database_url or not settings.redis_url:
        print(f"gridclear-cloud serve: set {env.DATABASE_URL} and {env.REDIS_URL}", file=sys.stderr)
        return 2
    from gridclear.cloud.storage.migrations import MigrationError, migrate, pending_migrations

    if migrate_first:
        try:
            applied = migrate(settings.database_url)
        except MigrationError as exc:
            print(f"gridclear-cloud serve: {exc}", file=sys.stderr)
            return 1
        log.info("migrations applied: %s", [f"{m.version:04d}_{m.name}" for m in applied])
    else:
        # The app's start-up checks this too, but a refusal there comes back as a
        # traceback through every nested lifespan; here it is one line.
        try:
            missing = pending_migrations(settings.database_url)
        except MigrationError as exc:
            print(f"gridclear-cloud serve: {exc}", file=sys.stderr)
            return 1
        if missing:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            print(
                f"gridclear-cloud serve: the database lacks migrations {names}: run "
                "`gridclear-cloud migrate` first (or serve --migrate)",
                file=sys.stderr,
            )
            return 1
    if settings.jwt_private_key is not None and settings.jwt_private_key_file is None:
        os.environ[env.JWT_PRIVATE_KEY] = settings.jwt_private_key.get_secret_value()
    from gridclear.cloud.api.server_limits import uvicorn_options

    uvicorn.run(
        "gridclear.cloud.api.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        access_log=False,  # our RequestContext middleware logs each request as JSON
        log_config=None,
        **uvicorn_options(settings),
    )
    return 0
