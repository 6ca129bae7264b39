"""pytest plugin: real PostgreSQL, Redis and Mosquitto for gridclear's tests.

Loaded for every test run wherever gridclear-devtools is installed, through its
``pytest11`` entry point.

Servers are started once per test session, lazily (a run that needs no broker
starts none), on free loopback ports, by :mod:`gridclear.devtools.localservices`.
Set ``GRIDCLEAR_DATABASE_URL``, ``GRIDCLEAR_REDIS_URL`` or ``GRIDCLEAR_MQTT_URL``
to run the same tests against existing servers (docker compose). A server that
cannot start fails the tests that need it, with its log; nothing is skipped.

Isolation between tests:

- ``database_url``: a fresh database per test module, dropped afterwards.
- ``redis_prefix``: a unique key prefix per test; its keys are deleted afterwards.
- ``mqtt_topic_prefix``: a unique topic prefix per test.
- ``smtp_server``: a real SMTP server per test (:class:`~gridclear.devtools.smtp.MailSink`)
  that keeps every message it receives; tests wait for mail to arrive.

The fixtures for the local servers (``local_postgres``, ``local_mosquitto``, …)
give fault tests the server object itself, to stop, kill and restart it.

``ledger_node`` runs the embedded Solana ledger node (``gridclear-cloud ledger
serve``) on a fresh state directory, to reach with solana-py's ``AsyncClient``.

``metersim`` runs simulated Modbus meters (``gridclear-metersim serve``) over
real TCP and pseudo-terminal RTU lines, with run-time fault switches.

**Two storage paths.** gridclear stores readings in plain PostgreSQL tables or, where
TimescaleDB is there, in hypertables with a continuous aggregate (DESIGN §7). A test
marked ``@pytest.mark.storage_paths`` runs twice, once per path: its ``database_url``
(and ``storage_admin_url``) comes from the plain server, then from a server with
TimescaleDB preloaded (``local_timescale``, or ``GRIDCLEAR_TEST_TIMESCALE_URL``); the
``storage_path`` fixture says which. Each database is told its path
(``gridclear.storage``), so the plain path is taken on purpose even on a server where
TimescaleDB is installed. Where TimescaleDB cannot be had, the TimescaleDB runs fail
with the reason; ``GRIDCLEAR_TEST_TIMESCALE=off`` turns them off, and then the header,
the summary and its last line say so. Either way the last line counts them.

The plugin imports neither the cloud nor its clients (psycopg, redis) until a
fixture needs them: the edge's and the simulator's tests run without them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from gridclear.devtools import REPO_ROOT, env
from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.localservices import (
    LocalService,
    MosquittoServer,
    PostgresServer,
    RedisServer,
    TimescaleServer,
)
from gridclear.devtools.metersim import MetersimProcess

if TYPE_CHECKING:
    from gridclear.devtools.smtp import MailSink

__all__ = [
    "BROKER_POLICY",
    "STORAGE_PATHS",
    "database_url",
    "gridclear_run_dir",
    "ledger_node",
    "local_mosquitto",
    "local_postgres",
    "local_redis",
    "local_timescale",
    "metersim",
    "mqtt_topic_prefix",
    "mqtt_url",
    "postgres_admin_url",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
    "redis_prefix",
    "redis_url",
    "server_dir",
    "smtp_server",
    "storage_admin_url",
    "storage_path",
    "timescale_admin_url",
    "timescale_enabled",
]

BROKER_POLICY = REPO_ROOT / "deploy" / "mosquitto" / "conf.d"

STORAGE_PATHS = ("plain", "timescaledb")
"""The storage paths a ``storage_paths`` test runs on, in this order."""

_session_failed_key = pytest.StashKey[bool]()
_timescale_outcomes_key = pytest.StashKey[dict[str, pytest.TestReport]]()
_TIMESCALE_OFF = f"the TimescaleDB path is off ({env.TEST_TIMESCALE}=off)"


def timescale_enabled() -> bool:
    """False when ``GRIDCLEAR_TEST_TIMESCALE=off``; the other accepted value is ``on``."""
    value = os.environ.get(env.TEST_TIMESCALE, "on").strip().lower()
    if value not in ("on", "off", ""):
        raise pytest.UsageError(f"{env.TEST_TIMESCALE} is 'on' or 'off', not {value!r}")
    return value != "off"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "storage_paths: run on plain PostgreSQL and on TimescaleDB (the storage_path fixture)",
    )
    timescale_enabled()  # a wrong value stops the run at once


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("storage_paths") is None:
        return
    if "storage_path" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} is marked storage_paths but uses no database "
            "(database_url, storage_admin_url or storage_path)"
        )
    off = () if timescale_enabled() else (pytest.mark.skip(reason=_TIMESCALE_OFF),)
    metafunc.parametrize(
        "storage_path",
        [pytest.param("plain"), pytest.param("timescaledb", marks=off)],
        indirect=True,
        scope="module",
    )


class _ExternalServer:
    """A server named by an environment variable: used as it is, never stopped."""

    def __init__(self, url: str) -> None:
        self.url = url


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for name, var in (
        ("postgres", env.DATABASE_URL),
        ("redis", env.REDIS_URL),
        ("mqtt", env.MQTT_URL),
    ):
        url = os.environ.get(var)
        lines.append(f"gridclear {name}: {url or 'throwaway local server (started on demand)'}")
    if not timescale_enabled():
        lines.append(f"gridclear timescaledb: OFF, {_TIMESCALE_OFF}: its tests are skipped")
    else:
        url = os.environ.get(env.TEST_TIMESCALE_URL)
        where = url or "throwaway local server with TimescaleDB preloaded (started on demand)"
        lines.append(f"gridclear timescaledb: {where}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        item.session.stash[_session_failed_key] = True
    if _on_timescale(item):
        outcomes = item.config.stash.setdefault(_timescale_outcomes_key, {})
        # One outcome per test: a failure in any phase wins, else the call's (or the
        # setup's, for a test that never got to its call).
        earlier = outcomes.get(item.nodeid)
        if earlier is None or (not earlier.failed and (report.failed or report.when == "call")):
            outcomes[item.nodeid] = report
    return report


def _on_timescale(item: pytest.Item) -> bool:
    """A test of the TimescaleDB path: its second run, or one that asks for the server."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("storage_path") == "timescaledb":
        return True
    return "timescale_admin_url" in getattr(item, "fixturenames", ())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Say what became of the TimescaleDB path, and count it in the last line."""
    outcomes = config.stash.get(_timescale_outcomes_key, {})
    if not outcomes:
        return
    reports = list(outcomes.values())
    # The last line counts each stats key's reports: these are the same reports as
    # under passed/failed/skipped, counted once more under their path.
    if not timescale_enabled():
        terminalreporter.write_sep("-", f"gridclear: {_TIMESCALE_OFF}", yellow=True, bold=True)
        terminalreporter.write_line(f"{len(reports)} tests of the TimescaleDB path not run")
        terminalreporter.stats.setdefault("TimescaleDB off", []).extend(reports)
        return
    counts = {k: sum(1 for r in reports if r.outcome == k) for k in ("passed", "failed")}
    skipped = sum(1 for r in reports if r.skipped)
    terminalreporter.write_sep("-", "gridclear: the TimescaleDB path")
    terminalreporter.write_line(
        f"{len(reports)} tests on TimescaleDB: {counts['passed']} passed, "
        f"{counts['failed']} failed, {skipped} skipped"
    )
    terminalreporter.stats.setdefault("on TimescaleDB", []).extend(reports)


@pytest.fixture(scope="session")
def gridclear_run_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The session's folder for server data and logs; kept when a test failed."""
    configured = os.environ.get(env.RUN_DIR)
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="gridclear-test-"))
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    yield path
    if request.session.stash.get(_session_failed_key, False) or configured:
        print(f"\ngridclear: server logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


_Server = TypeVar("_Server", bound=LocalService)


@pytest.fixture
def server_dir(gridclear_run_dir: Path) -> Path:
    """A fresh folder for a test's own server, reachable by the servers' unprivileged users."""
    path = gridclear_run_dir / f"case-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    return path


def _started(service: _Server) -> Iterator[_Server]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def local_postgres(gridclear_run_dir: Path) -> Iterator[PostgresServer]:
    """The throwaway PostgreSQL server itself (for tests that stop or restart it)."""
    server = PostgresServer(run_dir=gridclear_run_dir)
    yield from _started(server)


@pytest.fixture(scope="session")
def local_timescale(gridclear_run_dir: Path) -> Iterator[TimescaleServer]:
    """The throwaway PostgreSQL server with TimescaleDB preloaded.

    Fails (never skips) when TimescaleDB is not installed or does not load, with the
    reason and the server's log.
    """
    server = TimescaleServer(run_dir=gridclear_run_dir)
    yield from _started(server)


@pytest.fixture(scope="session")
def local_redis(gridclear_run_dir: Path) -> Iterator[RedisServer]:
    """The throwaway Redis server itself."""
    server = RedisServer(run_dir=gridclear_run_dir)
    yield from _started(server)


@pytest.fixture(scope="session")
def local_mosquitto(gridclear_run_dir: Path) -> Iterator[MosquittoServer]:
    """The throwaway Mosquitto broker itself, with production's policy included."""
    server = MosquittoServer(run_dir=gridclear_run_dir, policy_dir=BROKER_POLICY)
    yield from _started(server)


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> str:
    """A superuser URL of the session's PostgreSQL server (create databases with it)."""
    return os.environ.get(env.DATABASE_URL) or request.getfixturevalue("local_postgres").url


@pytest.fixture(scope="session")
def timescale_admin_url(request: pytest.FixtureRequest) -> str:
    """A superuser URL of the session's server with TimescaleDB preloaded.

    Skipped, with the reason, when ``GRIDCLEAR_TEST_TIMESCALE=off``.
    """
    if not timescale_enabled():
        pytest.skip(_TIMESCALE_OFF)
    return os.environ.get(env.TEST_TIMESCALE_URL) or request.getfixturevalue("local_timescale").url


@pytest.fixture(scope="module")
def storage_path(request: pytest.FixtureRequest) -> str:
    """The storage path of this test's database: ``plain``, or ``timescaledb`` in the
    second run of a test marked ``storage_paths``."""
    path: str = getattr(request, "param", "plain")
    return path


@pytest.fixture(scope="module")
def storage_admin_url(storage_path: str, request: pytest.FixtureRequest) -> str:
    """A superuser URL of the server for ``storage_path``."""
    fixture = "timescale_admin_url" if storage_path == "timescaledb" else "postgres_admin_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis server."""
    return os.environ.get(env.REDIS_URL) or request.getfixturevalue("local_redis").url


@pytest.fixture(scope="session")
def mqtt_url(request: pytest.FixtureRequest) -> str:
    """The session's MQTT broker."""
    return os.environ.get(env.MQTT_URL) or request.getfixturevalue("local_mosquitto").url


def _database_name(node: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", node.lower()).strip("_")[-40:]
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def database_url(
    storage_admin_url: str, storage_path: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, empty database for this test module, dropped afterwards.

    It takes ``storage_path`` on purpose (``gridclear.storage``), whatever the server.
    """
    import psycopg
    from psycopg import sql

    name = _database_name(request.module.__name__)
    with psycopg.connect(storage_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET gridclear.storage = {}").format(
                sql.Identifier(name), sql.Literal(storage_path)
            )
        )
    yield psycopg.conninfo.make_conninfo(storage_admin_url, dbname=name)
    with psycopg.connect(storage_admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def mqtt_topic_prefix() -> str:
    """A topic prefix no other test uses (``test/<random>/``)."""
    return f"test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def smtp_server() -> Iterator[MailSink]:
    """An SMTP server on a free loopback port (plain SMTP) that records every message."""
    from gridclear.devtools.smtp import MailSink

    with MailSink() as sink:
        yield sink


# ------------------------------------------------------------ simulated meters


@pytest.fixture
def metersim(server_dir: Path) -> Iterator[Callable[..., MetersimProcess]]:
    """A factory that runs ``gridclear-metersim serve`` as a child process; all stop afterwards.

    ``metersim(meters=["1:sdm630:flat:2000", "2:sunspec:pv"], speed=60, seed=1)``
    serves the meters on one free TCP port; ``metersim(site=path)`` serves a
    site file (TCP gateways and RTU lines). Optional: ``start="2025-06-21T10:00:00Z"``
    (simulated start, UTC), ``start_at`` (the wall-clock time at which simulated
    time was ``start``, to share one clock with other processes), ``port``. The
    call returns once every transport listens, with ``.host``/``.port`` (first
    TCP bus), ``.pty`` (first RTU line's device path, for a serial Modbus
    client), ``.buses``, and the run-time fault switches
    ``.fault(meter, kind, **params)``, ``.clear(meter)``, ``.status()``; meters
    are named ``tcp/<unit>`` for ``meters=`` runs. The simulator's output is in
    ``.output()``; a simulator that exits with an error fails the test that
    started it.
    """
    started: list[MetersimProcess] = []

    def start(**options: Any) -> MetersimProcess:
        process = MetersimProcess(workdir=server_dir, **options).start()
        started.append(process)
        return process

    yield start
    failures = []
    for process in started:
        code = process.stop()
        if code != 0:
            failures.append(f"gridclear-metersim exited with {code}:\n{process.output()}")
    if failures:
        pytest.fail("\n".join(failures))


# ------------------------------------------------------------ the ledger node


@pytest.fixture
def ledger_node(server_dir: Path) -> Iterator[Callable[..., LedgerNodeProcess]]:
    """A factory that runs ``gridclear-cloud ledger serve`` as a child process; all stop afterwards.

    ``ledger_node()`` starts a node with ``--dev`` (``requestAirdrop`` served) on a
    fresh state directory and a free port, and returns once it serves, with
    ``.url`` (give it to ``AsyncClient``), ``.state_dir``, ``.stop()`` (SIGTERM),
    ``.kill()`` (``kill -9``) and ``.start()`` (again, on the same state and URL). Options:
    ``dev=False``, ``tick_ms=`` (block time), ``state_dir=`` (to share one between
    nodes run one after the other). A node that exits with an error when stopped
    fails the test; its log is in ``.output()``.
    """
    started: list[LedgerNodeProcess] = []

    def start(**options: Any) -> LedgerNodeProcess:
        workdir = server_dir / f"ledger-{len(started)}"
        workdir.mkdir()
        node = LedgerNodeProcess(workdir=workdir, **options).start()
        started.append(node)
        return node

    yield start
    failures = []
    for node in started:
        code = node.stop()
        if code != 0:
            failures.append(f"the ledger node exited with {code}:\n{node.output()}")
    if failures:
        pytest.fail("\n".join(failures))
