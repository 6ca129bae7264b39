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

With several workers, or when ``PROMETHEUS_MULTIPROC_DIR`` is set, the workers keep
their metrics in that folder (one made here and removed at exit when it is unset),
so that ``/metrics``, whichever worker answers, reports the sums over all of them
(:mod:`gridclear.cloud.api.metrics`). The folder is emptied before the workers
start: values left by an earlier run would be added to this one's.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gridclear.cloud import env
from gridclear.cloud.logs import configure_logging
from gridclear.cloud.settings import ProcessSettings, Settings, SettingsError

__all__ = ["prepare_metrics_dir", "serve"]

log = logging.getLogger(__name__)

_WORKER_HEALTHCHECK_S = 60


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

    made = prepare_metrics_dir(workers=workers)
    try:
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
            # A worker must answer the supervisor's ping within this many seconds or be
            # killed and replaced. uvicorn's 5 s is less than a worker takes to import
            # the app on a busy host, which then replaces its workers for ever.
            timeout_worker_healthcheck=_WORKER_HEALTHCHECK_S,
            **uvicorn_options(settings),
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


def prepare_metrics_dir(*, workers: int) -> Path | None:
    """Set up prometheus-client's multiprocess folder for ``workers`` processes.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is created if missing and emptied of
    metric files; without one, several workers get a fresh temporary folder, named in
    the environment the workers inherit. Returns the folder made here (for the caller
    to remove), None otherwise. One worker without the variable keeps the plain mode.
    """
    given = os.environ.get(env.PROMETHEUS_MULTIPROC_DIR)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        return None
    if workers <= 1:
        return None
    made = Path(tempfile.mkdtemp(prefix="gridclear-metrics-"))
    os.environ[env.PROMETHEUS_MULTIPROC_DIR] = str(made)
    return made
