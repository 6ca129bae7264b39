"""``gridclear-dev demo``: the whole system on one machine, until Ctrl-C.

Servers named by ``GRIDCLEAR_*_URL`` are used as they are; the others are
started as throwaway instances (see :mod:`gridclear.devtools.localservices`).
The system's own processes (simulated meters, gateways, the cloud) run as
children under a :class:`Supervisor`: each logs to the run folder, none can
outlive the demo, and if one dies the demo says which, shows its log and stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn

import psycopg

from gridclear.cloud import env as cloud_env
from gridclear.devtools import env
from gridclear.devtools._demo_plan import (
    DemoGateway,
    SimulatedTime,
    demo_time,
    edge_config_toml,
    gateways_from_site,
    max_clock_ahead_s,
    summarize,
)
from gridclear.devtools.children import log_tail, spawn_child
from gridclear.devtools.localservices import LocalServices, ServiceStartError
from gridclear.devtools.net import free_port

__all__ = [
    "DEMO_ADMIN_EMAIL",
    "DEMO_ALLOWANCE",
    "DEMO_WALLET_LAMPORTS",
    "DEMO_WALLET_MONEY",
    "ChildExitedError",
    "DemoStepError",
    "Supervisor",
    "default_broker_policy",
    "default_demo_site",
    "run_demo",
]


class ChildExitedError(RuntimeError):
    """A supervised process exited while the demo was running."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Supervisor:
    """Runs the demo's processes; stops them in reverse order of start."""

    log_dir: Path
    children: list[_Child] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> _Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        merged = None if env is None else {**os.environ, **env}
        process = spawn_child(argv, log_path=log_path, cwd=self.log_dir, env=merged)
        child = _Child(name=name, process=process, log_path=log_path)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise ChildExitedError, with the log's tail, if any child has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise ChildExitedError(
                    f"{child.name} exited with code {code}; last lines of {child.log_path}:\n"
                    f"{log_tail(child.log_path)}"
                )

    def stop(self, timeout_s: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()


DEMO_ADMIN_EMAIL = "operator@demo.gridclear.invalid"
DEMO_WALLET_LAMPORTS = 2_000_000_000
"""SOL for each household wallet's fees and token-account rent (development ledger)."""
DEMO_WALLET_MONEY = 1_000_000_000
"""Payment base units each household starts with: 1,000 tokens of 6 decimals."""
DEMO_ALLOWANCE = 10**12
"""What each household lets settlement move, in either token (caps of its approval)."""


def _find_upwards(relative: str) -> Path | None:
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / relative
        if candidate.exists():
            return candidate
    return None


def default_demo_site() -> Path | None:
    """The checkout's demo street, ``firmware-sim/examples/demo-site.toml``."""
    return _find_upwards("firmware-sim/examples/demo-site.toml")


def default_broker_policy() -> Path | None:
    """The checkout's ``deploy/mosquitto/conf.d``, found from the working directory."""
    configured = os.environ.get(env.BROKER_CONFIG)
    if configured:
        return Path(configured)
    return _find_upwards("deploy/mosquitto/conf.d")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class DemoStepError(RuntimeError):
    """A set-up step of the demo failed; the message says which and why."""


def _tool(name: str) -> str:
    """A console script of this environment (the demo runs the installed commands)."""
    return str(Path(sys.executable).parent / name)


def _run_step(what: str, argv: Sequence[str], env: Mapping[str, str]) -> str:
    result = subprocess.run(  # noqa: S603 -- our own console scripts, fixed arguments
        list(argv), capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    if result.returncode != 0:
        raise DemoStepError(f"{what} failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def _wait_until(
    what: str, ready: Callable[[], bool], supervisor: Supervisor, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        supervisor.check()
        if time.monotonic() > deadline:
            raise DemoStepError(f"{what} was not ready after {timeout_s:.0f} s")
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 -- our own http URL
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class _Counts:
    readings: int
    messages: int
    quarantined: int
    online: int
    settled: int
    failed: int
    reconciliation: str


def _counts(database_url: str) -> _Counts:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM raw_messages),"
            " (SELECT count(*) FROM quarantine),"
            " (SELECT count(*) FROM device_status WHERE state = 'online'),"
            " (SELECT count(*) FROM trade_settlements WHERE state = 'settled'),"
            " (SELECT count(*) FROM trade_settlements WHERE state = 'failed'),"
            " (SELECT CASE WHEN clean THEN 'clean' ELSE 'differences' END"
            "  FROM reconciliation_runs ORDER BY id DESC LIMIT 1)"
        ).fetchone()
    assert row is not None
    readings, messages, quarantined, online, settled, failed, reconciliation = row
    return _Counts(
        readings, messages, quarantined, online, settled, failed, reconciliation or "not yet"
    )


def _start_system(
    services: LocalServices, supervisor: Supervisor, urls: Mapping[str, str], site: Path
) -> list[str]:
    """Start meters, cloud and gateways; return the lines that say what runs where."""
    run_dir = services.run_dir / "demo"
    child_env = {
        cloud_env.DATABASE_URL: urls["postgres"],
        cloud_env.REDIS_URL: urls["redis"],
        cloud_env.MQTT_URL: urls["mosquitto"],
        cloud_env.LOG_FORMAT: "json",
    }
    print("  migrating the database ...", flush=True)
    _run_step("gridclear-cloud migrate", [_tool("gridclear-cloud"), "migrate"], child_env)

    clock = _demo_clock(site)
    print("  starting the simulated street (gridclear-metersim) ...", flush=True)
    ready_file = run_dir / "metersim.json"
    supervisor.start(
        "metersim",
        [
            _tool("gridclear-metersim"),
            "serve",
            "--site",
            str(site),
            "--ready-file",
            str(ready_file),
            "--speed",
            f"{clock.speed:g}",
            "--start",
            SimulatedTime.iso(clock.epoch),
            "--start-at",
            SimulatedTime.iso(clock.epoch_at),
        ],
    )
    _wait_until("the meter simulator", ready_file.exists, supervisor, 30)
    ready = json.loads(ready_file.read_text())
    gateways = gateways_from_site(ready)

    ledger_lines = _start_ledger(supervisor, run_dir=run_dir, child_env=child_env)

    print("  starting the ingest worker and the API ...", flush=True)
    supervisor.start(
        "ingest",
        [
            _tool("gridclear-cloud"),
            "ingest",
            "--client-id",
            "gridclear-cloud:demo-ingest-1",
            # Simulated time runs ahead of the wall clock (59 s a second at 60x); the
            # production bound (10 minutes) would quarantine every reading after 10 s.
            "--max-clock-ahead-s",
            f"{max_clock_ahead_s(clock):.0f}",
        ],
        env=child_env,
    )
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    supervisor.start(
        "api",
        [_tool("gridclear-cloud"), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        env=child_env,
    )
    admin_password = secrets.token_urlsafe(18)
    password_file = run_dir / "admin.password"
    password_file.write_text(admin_password + "\n")
    password_file.chmod(0o600)
    _run_step(
        "creating the demo operator account",
        [
            _tool("gridclear-cloud"),
            "admin",
            "create",
            "--email",
            DEMO_ADMIN_EMAIL,
            "--display-name",
            "Demo operator",
            "--password-file",
            str(password_file),
        ],
        child_env,
    )

    print(f"  enrolling {len(gateways)} gateways and starting their agents ...", flush=True)
    for gateway in gateways:
        folder = run_dir / gateway.device_id
        folder.mkdir(parents=True, exist_ok=True)
        key_file = folder / "device.key"
        if not key_file.exists():
            keygen = _run_step(
                f"gridclear-edge keygen for {gateway.device_id}",
                [_tool("gridclear-edge"), "keygen", "--key", str(key_file)],
                {},
            )
            public_key = json.loads(keygen)["public_key"]
            _run_step(
                f"registering {gateway.device_id}",
                [
                    _tool("gridclear-cloud"),
                    "devices",
                    "add",
                    "--device-id",
                    gateway.device_id,
                    "--site",
                    "demo-street",
                    # '=' form: a base64url key may begin with '-'.
                    f"--public-key={public_key}",
                    "--exist-ok",
                ],
                child_env,
            )
            for meter in gateway.meters:
                _run_step(
                    f"binding meter {meter.name}",
                    [
                        _tool("gridclear-cloud"),
                        "devices",
                        "meter",
                        "--device-id",
                        gateway.device_id,
                        "--meter",
                        meter.name,
                        "--role",
                        meter.role,
                        "--model",
                        meter.model,
                    ],
                    child_env,
                )
        config = folder / "edge.toml"
        config.write_text(
            edge_config_toml(
                gateway,
                key_file=key_file,
                outbox=folder / "outbox.db",
                mqtt_url=urls["mosquitto"],
                simulation=clock,
            )
        )
        supervisor.start(
            f"edge-{gateway.device_id}", [_tool("gridclear-edge"), "run", "--config", str(config)]
        )

    _wait_until("the API", lambda: _http_ok(f"{api_url}/api/health/live"), supervisor, 30)
    bus = ", ".join(f"{b['name']} on modbus-tcp {b['host']}:{b['port']}" for b in ready["buses"])
    login_file = run_dir / "login.json"
    login_file.write_text(json.dumps({"email": DEMO_ADMIN_EMAIL, "password": admin_password}))
    login_file.chmod(0o600)
    market_lines = _start_market(
        supervisor,
        run_dir=run_dir,
        child_env=child_env,
        api_url=api_url,
        gateways=gateways,
        clock=clock,
    )
    return [
        f"  time       one simulated time for meters, gateways and market: x{clock.speed:g},"
        f" {SimulatedTime.iso(clock.epoch)} at {SimulatedTime.iso(clock.epoch_at)} (wall)",
        f"  meters     {sum(len(g.meters) for g in gateways)} simulated meters, {bus}",
        *(f"  gateway    {line}" for line in summarize(gateways)),
        f"  ingest     1 worker, shared subscription on {urls['mosquitto']}",
        f"  api        {api_url}   (OpenAPI: {api_url}/docs)",
        *ledger_lines,
        *market_lines,
        "",
        "Watch readings arrive through the API (the login is in the run folder):",
        f"  curl -s -X POST {api_url}/api/auth/login -H 'content-type: application/json'"
        f" -d @{login_file}",
        f'  curl -s -H "Authorization: Bearer <accessToken>" {api_url}/api/meters',
        f"Logs of every process: {run_dir}",
    ]


def _start_ledger(supervisor: Supervisor, *, run_dir: Path, child_env: dict[str, str]) -> list[str]:
    """The embedded ledger node, the service keys and the mints; adds them to ``child_env``."""
    from gridclear.cloud.ledger.keys import create_key_file

    print("  starting the ledger node and creating the mints ...", flush=True)
    ready_file = run_dir / "ledger.ready.json"
    ready_file.unlink(missing_ok=True)
    supervisor.start(
        "ledger",
        [
            _tool("gridclear-cloud"),
            "ledger",
            "serve",
            "--dev",
            "--port",
            "0",
            "--state-dir",
            str(run_dir / "ledger-state"),
            "--ready-file",
            str(ready_file),
        ],
    )
    _wait_until("the ledger node", ready_file.exists, supervisor, 60)
    rpc_url = str(json.loads(ready_file.read_text())["url"])
    keys = {
        cloud_env.ORACLE_KEY_FILE: run_dir / "oracle.json",
        cloud_env.SETTLEMENT_KEY_FILE: run_dir / "settlement.json",
    }
    for key_file in keys.values():
        if not key_file.exists():
            create_key_file(key_file)
    child_env[cloud_env.SOLANA_RPC_URL] = rpc_url
    child_env.update({name: str(path) for name, path in keys.items()})
    _run_step(
        "gridclear-cloud ledger init",
        [_tool("gridclear-cloud"), "ledger", "init", "--airdrop"],
        child_env,
    )
    return [f"  ledger     {rpc_url}   (Solana JSON-RPC; settlement: docs/SETTLEMENT.md)"]


def _fund_wallets(child_env: Mapping[str, str], wallet_files: Sequence[Path]) -> None:
    """Create each household's wallet and fund it as a development ledger's faucet does.

    In process rather than one ``ledger faucet`` per wallet: on a busy two-core
    machine each command's start-up alone took seconds.
    """
    import asyncio

    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    from gridclear.cloud.ledger.client import LedgerClient
    from gridclear.cloud.ledger.keys import create_key_file, load_key_file
    from gridclear.cloud.settlement import store
    from gridclear.cloud.settlement.setup import grant_payment

    fresh = [(path, create_key_file(path)) for path in wallet_files if not path.exists()]
    if not fresh:
        return

    async def fund() -> None:
        oracle = load_key_file(Path(child_env[cloud_env.ORACLE_KEY_FILE])).keypair
        authority = load_key_file(Path(child_env[cloud_env.SETTLEMENT_KEY_FILE])).keypair
        async with (
            LedgerClient(child_env[cloud_env.SOLANA_RPC_URL]) as ledger,
            await AsyncConnection.connect(
                child_env[cloud_env.DATABASE_URL], autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            setup = await store.load_setup(conn)
            if setup is None:
                raise DemoStepError("the ledger was not set up")
            drops = [
                await ledger.request_airdrop(key.pubkey, DEMO_WALLET_LAMPORTS) for _, key in fresh
            ]
            await ledger.wait_landed(drops)
            for _, key in fresh:
                await grant_payment(
                    conn,
                    ledger,
                    setup,
                    oracle=oracle,
                    authority=authority,
                    wallet=key.pubkey,
                    amount=DEMO_WALLET_MONEY,
                )

    try:
        asyncio.run(fund())
    except Exception as error:  # any failure here is the demo's set-up failing
        raise DemoStepError(f"funding the households' wallets failed: {error}") from error


def _demo_clock(site: Path) -> SimulatedTime:
    """The demo's one simulated time: the site's speed (default 60), from its morning."""
    try:
        data = tomllib.loads(site.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DemoStepError(f"reading the site file {site} failed: {error}") from error
    speed = float(data.get("speed", 60)) or 60.0
    longitude = float(data.get("longitude", 11.58))
    return demo_time(datetime.now(UTC), speed=speed, longitude=longitude)


def _start_market(
    supervisor: Supervisor,
    *,
    run_dir: Path,
    child_env: Mapping[str, str],
    api_url: str,
    gateways: Sequence[DemoGateway],
    clock: SimulatedTime,
) -> list[str]:
    """The scheduler, on the street's simulated time, and a trader per household."""
    from gridclear.devtools.participants import ApiClient, ApiRequestError

    speed = clock.speed
    # An hour of slots open ahead (a minute of wall time at x60) keeps the book tidy;
    # set before the scheduler creates the first slots.
    operator = ApiClient(api_url)
    password = json.loads((run_dir / "login.json").read_text())["password"]
    try:
        operator.login(DEMO_ADMIN_EMAIL, password)
        operator.call("PUT", "/api/market/config", {"openAheadS": 3600})
    except (ApiRequestError, OSError) as error:
        raise DemoStepError(f"configuring the market failed: {error}") from error
    supervisor.start(
        "scheduler",
        [
            _tool("gridclear-cloud"),
            "scheduler",
            "--speed",
            f"{speed:g}",
            "--epoch",
            SimulatedTime.iso(clock.epoch),
            "--epoch-at",
            SimulatedTime.iso(clock.epoch_at),
        ],
        env=child_env,
    )
    households = [
        {
            "name": g.household,
            "deviceId": g.device_id,
            "meters": [{"name": m.name, "role": m.role, "model": m.model} for m in g.meters],
            "email": f"{g.household}@demo.gridclear.invalid",
            "password": secrets.token_urlsafe(18),
        }
        for g in gateways
    ]
    wallets = run_dir / "wallets"
    wallets.mkdir(exist_ok=True)
    for household in households:
        household["walletKeyFile"] = str(wallets / f"{household['name']}.json")
    _fund_wallets(child_env, [Path(str(h["walletKeyFile"])) for h in households])
    households_file = run_dir / "households.json"
    households_file.write_text(json.dumps(households, indent=2))
    households_file.chmod(0o600)
    supervisor.start(
        "participants",
        [
            _tool("gridclear-dev"),
            "participants",
            "--api",
            api_url,
            "--operator-login",
            str(run_dir / "login.json"),
            "--households",
            str(households_file),
        ],
        env=child_env,
    )
    return [
        f"  scheduler  market time x{speed:g}: a 15-minute slot every {900 / speed:g} s",
        f"  traders    {len(households)} households bid or offer from their grid meters,"
        " each with its own wallet, onboarded for settlement"
        f" (log: {run_dir / 'participants.log'})",
    ]


def run_demo(*, run_dir: Path | None, broker_policy: Path | None, site: Path | None = None) -> int:
    # SIGINT too, explicitly: started in the background from a script, a process
    # inherits SIGINT as ignored, and Python then raises no KeyboardInterrupt.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_on_sigterm)
    external = {
        "postgres": os.environ.get(env.DATABASE_URL),
        "redis": os.environ.get(env.REDIS_URL),
        "mosquitto": os.environ.get(env.MQTT_URL),
    }
    site = site or default_demo_site()
    if site is None:
        print(
            "gridclear demo: no site file; pass --site (see firmware-sim/examples/)",
            file=sys.stderr,
        )
        return 2
    print("gridclear demo: starting services ...", flush=True)
    try:
        with LocalServices.start(
            run_dir=run_dir,
            broker_policy=broker_policy or default_broker_policy(),
            postgres=external["postgres"] is None,
            redis=external["redis"] is None,
            mosquitto=external["mosquitto"] is None,
        ) as services:
            urls = {s.name: s.url for s in services} | {
                name: url for name, url in external.items() if url is not None
            }
            supervisor = Supervisor(log_dir=services.run_dir / "demo")
            try:
                lines = _start_system(services, supervisor, urls, site)
                print("\nWhat runs where:")
                for service in services:
                    print(f"  {service.describe()}")
                for name, url in external.items():
                    if url is not None:
                        print(f"  {name:<10} {url:<45} (external, from the environment)")
                print("\n".join(lines))
                print(f"\nRun folder: {services.run_dir}")
                print("Press Ctrl-C to stop.", flush=True)
                _watch(supervisor, urls["postgres"])
            finally:
                with contextlib.suppress(OSError):
                    supervisor.stop()
    except KeyboardInterrupt:
        print("\ngridclear demo: stopped; every service shut down.", flush=True)
        return 0
    except (ServiceStartError, ChildExitedError, DemoStepError) as error:
        print(f"gridclear demo: {error}", file=sys.stderr)
        return 1


def _watch(supervisor: Supervisor, database_url: str, every_s: float = 10.0) -> NoReturn:
    """Keep the children honest and say, now and then, what has arrived."""
    next_report = time.monotonic() + every_s
    while True:
        supervisor.check()
        if time.monotonic() >= next_report:
            next_report += every_s
            try:
                counts = _counts(database_url)
            except psycopg.Error as error:  # progress output must never stop the demo
                print(f"  (could not count readings: {error})", flush=True)
            else:
                print(
                    f"  {time.strftime('%H:%M:%S')}  readings stored: {counts.readings:,}"
                    f"  messages: {counts.messages:,}  quarantined: {counts.quarantined:,}"
                    f"  gateways online: {counts.online}  trades settled: {counts.settled:,}"
                    f" (failed {counts.failed})  reconciliation: {counts.reconciliation}",
                    flush=True,
                )
        time.sleep(0.5)
