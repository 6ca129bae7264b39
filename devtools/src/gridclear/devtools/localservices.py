"""Throwaway PostgreSQL, Redis and Mosquitto servers for development, tests and the demo.

gridclear runs against real servers, never stand-ins. When no URL is configured
for a service, this module starts one from the distribution's binaries, on a
free loopback port, with its data and log in a run folder, and stops it again:

    with LocalServices.start(run_dir=path, broker_policy=conf_dir) as services:
        services.database_url, services.redis_url, services.mqtt_url

Design notes:

- Each server is a direct child process running in the foreground, in its own
  session (a Ctrl-C in the terminal reaches us, and we stop the servers in
  order), and with a parent-death signal, so that even a ``kill -9`` of the
  parent leaves no server behind (:mod:`gridclear.devtools.children`).
- PostgreSQL refuses to run as root, so as root every server runs as its
  Debian package's unprivileged user, and the run folder is made traversable.
- Mosquitto includes the same policy files as production (``deploy/mosquitto/
  conf.d``): queue limits that would silently drop QoS 1 messages for a slow
  subscriber must be caught here, not in production.
- The durability settings of the throwaway PostgreSQL (no fsync) trade crash
  safety of the *server* for speed; a clean stop still keeps all data, so a
  stopped server can be started again on the same folder (fault tests do).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridclear.devtools.children import log_tail, spawn_child
from gridclear.devtools.net import free_port

__all__ = [
    "BrokerTls",
    "LocalService",
    "LocalServices",
    "MosquittoServer",
    "PostgresServer",
    "RedisServer",
    "ServiceNotInstalledError",
    "ServiceStartError",
    "TimescaleServer",
]


class ServiceStartError(RuntimeError):
    """A server did not come up; the message carries the end of its log."""

    def __init__(self, service: str, reason: str, log_path: Path | None) -> None:
        self.service = service
        self.reason = reason
        self.log_path = log_path
        tail = log_tail(log_path) if log_path else ""
        where = f"\n--- last lines of {log_path} ---\n{tail}" if tail else ""
        super().__init__(f"{service} did not start: {reason}{where}")


class ServiceNotInstalledError(ServiceStartError):
    """The server's binary is not on this machine; the message says what to install."""


def _find_binary(name: str, extra_globs: Sequence[str], package: str) -> Path:
    found = shutil.which(name)
    if found:
        return Path(found)
    # Debian keeps server binaries off PATH (postgres in /usr/lib/postgresql/N/bin,
    # mosquitto in /usr/sbin); take the newest version present.
    candidates = sorted(
        (Path(p) for pattern in extra_globs for p in glob.glob(pattern)),
        key=lambda p: [int(part) if part.isdigit() else 0 for part in p.parts],
    )
    if candidates:
        return candidates[-1]
    raise ServiceNotInstalledError(
        name,
        f"'{name}' was not found. Install it with: apt-get install {package} "
        "(script/bootstrap does this for you)",
        None,
    )


def _service_user(preferred: str) -> pwd.struct_passwd | None:
    """The unprivileged account a server runs as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceStartError(preferred, f"running as root and no '{preferred}' user exists", None)


class LocalService(ABC):
    """One throwaway server: a child process, a port on 127.0.0.1, a folder, a log."""

    name: ClassVar[str]
    package: ClassVar[str]
    """The Debian package that provides the binary."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout_s: ClassVar[float] = 30.0

    def __init__(self, *, run_dir: Path, port: int | None = None) -> None:
        self.dir = run_dir / self.name
        self.port = port or free_port()
        self.log_path = self.dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _service_user(self.unprivileged_user)

    unprivileged_user: ClassVar[str]

    @property
    @abstractmethod
    def url(self) -> str:
        """How clients reach this server."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The foreground server command line."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """True once the server answers its protocol (not merely accepts TCP)."""

    def _prepare(self) -> None:  # noqa: B027 -- an optional hook, empty by default
        """Create files the server needs before its first start (idempotent)."""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start the server and wait until it answers; raise ServiceStartError if it does not."""
        if self.running:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.dir)
        self._prepare()
        process = spawn_child(
            self._command(),
            log_path=self.log_path,
            cwd=self.dir,
            user=self._user,
            death_signal=self.stop_signal,
        )
        self._process = process
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self._process = None
                raise ServiceStartError(self.name, f"exited with code {code}", self.log_path)
            if self._is_ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceStartError(
            self.name, f"not ready after {self.start_timeout_s:.0f} s", self.log_path
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server cleanly (its data stays, so start() brings it back)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the server without a clean shutdown, as a crash or power cut would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run_as_user(self, argv: list[str]) -> None:
        """Run a one-off helper (initdb) as the server's user; log its output."""
        with self.log_path.open("ab") as log:
            result = subprocess.run(  # noqa: S603 -- fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                check=False,
            )
        if result.returncode != 0:
            raise ServiceStartError(
                self.name,
                f"{Path(argv[0]).name} exited with code {result.returncode}",
                self.log_path,
            )

    def describe(self) -> str:
        return f"{self.name:<10} {self.url:<45} log: {self.log_path}"


class PostgresServer(LocalService):
    """PostgreSQL with trust authentication on 127.0.0.1, superuser ``gridclear``.

    It takes gridclear's plain storage path on purpose (``gridclear.storage = plain``
    for the whole server), even where TimescaleDB is installed: that path is tested
    whatever the machine has. :class:`TimescaleServer` is the other path.
    """

    name = "postgres"
    package = "postgresql"
    unprivileged_user = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, exit now.
    stop_signal = signal.SIGINT
    superuser = "gridclear"
    storage: ClassVar[str] = "plain"
    """The server's default ``gridclear.storage`` (migration 0011 reads it)."""

    def __init__(self, *, run_dir: Path, port: int | None = None, durable: bool = False) -> None:
        super().__init__(run_dir=run_dir, port=port)
        self.durable = durable
        # Resolved: a symlink on PATH (/usr/local/bin/postgres) stands for the real tree,
        # whose folders hold initdb and tell where the extensions are.
        self._bin = (
            _find_binary("postgres", ["/usr/lib/postgresql/*/bin/postgres"], self.package)
            .resolve()
            .parent
        )
        self.data_dir = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run_as_user(
            [
                str(self._bin / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.superuser,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "max_connections": "300",
            "shared_buffers": "128MB",
            "logging_collector": "off",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self._extra_settings()
        argv = [str(self._bin / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _extra_settings(self) -> dict[str, str]:
        return {"gridclear.storage": self.storage}

    def _is_ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


class TimescaleServer(PostgresServer):
    """PostgreSQL with TimescaleDB preloaded, taking gridclear's TimescaleDB path.

    Needs TimescaleDB installed for the machine's PostgreSQL (``script/bootstrap``
    installs it where it can). Where it is missing or does not load, :meth:`start`
    raises :class:`ServiceNotInstalledError` saying so, with the server's log: the
    TimescaleDB tests fail loudly rather than pass on the plain path.
    """

    name = "timescaledb"
    storage = "timescaledb"

    def _extra_settings(self) -> dict[str, str]:
        return super()._extra_settings() | {
            "shared_preload_libraries": "timescaledb",
            "timescaledb.telemetry_level": "off",
        }

    def start(self) -> None:
        share = self._share_dir()
        control = share / "extension" / "timescaledb.control" if share else None
        if control is not None and not control.exists():
            raise ServiceNotInstalledError(
                self.name,
                f"TimescaleDB is not installed for {self._bin.parent} ({control} is missing). "
                "Run script/bootstrap, or set GRIDCLEAR_TEST_TIMESCALE=off to run the tests "
                "without the TimescaleDB path",
                None,
            )
        try:
            super().start()
        except ServiceNotInstalledError:
            raise
        except ServiceStartError as exc:
            raise ServiceNotInstalledError(
                self.name,
                f"PostgreSQL with TimescaleDB preloaded did not start ({exc.reason}); is the "
                "TimescaleDB build the one for this PostgreSQL? Run script/bootstrap, or set "
                "GRIDCLEAR_TEST_TIMESCALE=off to run the tests without the TimescaleDB path",
                exc.log_path,
            ) from exc

    def _share_dir(self) -> Path | None:
        """PostgreSQL's share folder in Debian's layout; None in another layout.

        Debian installs ``<prefix>/lib/postgresql/N/bin`` and ``<prefix>/share/
        postgresql/N``; PostgreSQL finds its share folder relative to its binary, so a
        copy of the tree elsewhere works too. (Elsewhere the start itself tells.)
        """
        version_dir = self._bin.parent
        if version_dir.parent.name != "postgresql" or len(version_dir.parents) < 3:
            return None
        return version_dir.parents[2] / "share" / "postgresql" / version_dir.name


class RedisServer(LocalService):
    """Redis on 127.0.0.1 without persistence (a cache and a nonce store: throwaway)."""

    name = "redis"
    package = "redis-server"
    unprivileged_user = "redis"

    def __init__(self, *, run_dir: Path, port: int | None = None) -> None:
        super().__init__(run_dir=run_dir, port=port)
        self._binary = _find_binary("redis-server", [], self.package)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            str(self._binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--databases",
            "64",
        ]

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass(frozen=True)
class BrokerTls:
    """PEM files for a broker's TLS listener: the CA that signed it, its cert and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class MosquittoServer(LocalService):
    """Mosquitto on 127.0.0.1 with production's queueing policy included.

    Anonymous over plain TCP by default; with ``tls`` the listener speaks TLS only, and
    with ``password_file`` (made by ``mosquitto_passwd``) clients must authenticate,
    as production's gateways do.
    """

    name = "mosquitto"
    package = "mosquitto"
    unprivileged_user = "mosquitto"

    def __init__(
        self,
        *,
        run_dir: Path,
        policy_dir: Path | None,
        port: int | None = None,
        tls: BrokerTls | None = None,
        password_file: Path | None = None,
    ) -> None:
        super().__init__(run_dir=run_dir, port=port)
        self._binary = _find_binary("mosquitto", ["/usr/sbin/mosquitto"], self.package)
        self.policy_dir = policy_dir
        self.tls = tls
        self.password_file = password_file
        self.config_path = self.dir / "mosquitto.conf"

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _private_copy(self, source: Path, name: str) -> Path:
        # The server's user reads it; nobody else needs to.
        target = self.dir / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        self._chown(target)
        return target

    def _prepare(self) -> None:
        conf_d = self.dir / "conf.d"
        conf_d.mkdir(exist_ok=True)
        self._chown(conf_d)
        # Copied, not referenced: the server user may not be able to read the checkout.
        if self.policy_dir is not None:
            for policy in sorted(self.policy_dir.glob("*.conf")):
                shutil.copyfile(policy, conf_d / policy.name)
        listener = [f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            listener += [
                f"cafile {self._private_copy(self.tls.ca_file, 'ca.crt')}",
                f"certfile {self._private_copy(self.tls.cert_file, 'server.crt')}",
                f"keyfile {self._private_copy(self.tls.key_file, 'server.key')}",
            ]
        if self.password_file is not None:
            listener += [
                "allow_anonymous false",
                f"password_file {self._private_copy(self.password_file, 'passwd')}",
            ]
        else:
            listener.append("allow_anonymous true")
        self.config_path.write_text(
            "# Generated for a throwaway local broker; the policy comes from conf.d.\n"
            + "\n".join(listener)
            + "\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "connection_messages false\n"
            f"include_dir {conf_d}\n"
        )

    def _command(self) -> list[str]:
        return [str(self._binary), "-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        """Whether the broker answers an MQTT CONNECT (paho's, with a 1 s timeout).

        With a password file an anonymous CONNECT is refused: an answer is still ready.
        """
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="gridclear-ready"
        )
        if self.tls is not None:
            client.tls_set_context(ssl.create_default_context(cafile=self.tls.ca_file))
        client.connect_timeout = 1.0
        try:
            client.connect("127.0.0.1", self.port, keepalive=5)
        except OSError:
            return False
        answered: list[int] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: answered.append(reason.value)
        deadline = time.monotonic() + 1.0
        try:
            while not answered and time.monotonic() < deadline:
                if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    break
        finally:
            with contextlib.suppress(OSError):
                client.disconnect()
        if not answered:
            return False
        return answered[0] == 0 or self.password_file is not None


@dataclass
class LocalServices:
    """The three throwaway servers, started together and stopped in reverse order."""

    run_dir: Path
    postgres: PostgresServer | None
    redis: RedisServer | None
    mosquitto: MosquittoServer | None
    _owns_run_dir: bool = False

    @classmethod
    def start(
        cls,
        *,
        run_dir: Path | None = None,
        broker_policy: Path | None = None,
        postgres: bool = True,
        redis: bool = True,
        mosquitto: bool = True,
        durable: bool = False,
    ) -> Self:
        """Start the chosen servers; on any failure stop what had started and raise."""
        owns = run_dir is None
        if run_dir is None:
            # Not under the checkout: a clean clone may sit in a 0700 folder that the
            # servers' unprivileged users cannot enter.
            run_dir = Path(tempfile.mkdtemp(prefix="gridclear-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir.chmod(0o755)
        services = cls(
            run_dir=run_dir,
            postgres=PostgresServer(run_dir=run_dir, durable=durable) if postgres else None,
            redis=RedisServer(run_dir=run_dir) if redis else None,
            mosquitto=MosquittoServer(run_dir=run_dir, policy_dir=broker_policy)
            if mosquitto
            else None,
            _owns_run_dir=owns,
        )
        try:
            for service in services:
                service.start()
        except BaseException:
            services.stop()
            raise
        return services

    def __iter__(self) -> Iterator[LocalService]:
        return iter(s for s in (self.postgres, self.redis, self.mosquitto) if s is not None)

    @property
    def database_url(self) -> str:
        assert self.postgres is not None, "PostgreSQL was not started"
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        assert self.redis is not None, "Redis was not started"
        return self.redis.url

    @property
    def mqtt_url(self) -> str:
        assert self.mosquitto is not None, "Mosquitto was not started"
        return self.mosquitto.url

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop every server (even if one fails to stop) and remove a run folder we made."""
        for service in reversed(list(self)):
            with contextlib.suppress(OSError):
                service.stop()
        if self._owns_run_dir and not keep_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Keep the logs when we leave because of an error: they are the evidence.
        self.stop(keep_files=exc_type is not None and not issubclass(exc_type, KeyboardInterrupt))
