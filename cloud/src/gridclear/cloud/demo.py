"""``gridclear-cloud demo``: the whole system on one machine, until Ctrl-C.

Servers named by ``GRIDCLEAR_*_URL`` are used as they are; the others are
started as throwaway instances (see :mod:`gridclear.cloud.localservices`).
The system's own processes (simulated meters, gateways, the cloud) run as
children under a :class:`Supervisor`: each logs to the run folder, none can
outlive the demo, and if one dies the demo says which, shows its log and stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from gridclear.cloud import env
from gridclear.cloud.localservices import LocalServices, ServiceStartError, _tail, spawn_child

__all__ = ["ChildExitedError", "Supervisor", "run_demo"]


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
                    f"{_tail(child.log_path)}"
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


def default_broker_policy() -> Path | None:
    """The checkout's ``deploy/mosquitto/conf.d``, found from the working directory."""
    configured = os.environ.get(env.BROKER_CONFIG)
    if configured:
        return Path(configured)
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / "deploy" / "mosquitto" / "conf.d"
        if candidate.is_dir():
            return candidate
    return None


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(*, run_dir: Path | None, broker_policy: Path | None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    external = {
        "postgres": os.environ.get(env.DATABASE_URL),
        "redis": os.environ.get(env.REDIS_URL),
        "mosquitto": os.environ.get(env.MQTT_URL),
    }
    print("gridclear demo: starting services ...", flush=True)
    try:
        with LocalServices.start(
            run_dir=run_dir,
            broker_policy=broker_policy or default_broker_policy(),
            postgres=external["postgres"] is None,
            redis=external["redis"] is None,
            mosquitto=external["mosquitto"] is None,
        ) as services:
            supervisor = Supervisor(log_dir=services.run_dir / "demo")
            try:
                print("\nWhat runs where:")
                for service in services:
                    print(f"  {service.describe()}")
                for name, url in external.items():
                    if url is not None:
                        print(f"  {name:<10} {url:<45} (external, from the environment)")
                print(f"\nRun folder: {services.run_dir}")
                print("Press Ctrl-C to stop.", flush=True)
                while True:
                    supervisor.check()
                    time.sleep(1)
            finally:
                with contextlib.suppress(OSError):
                    supervisor.stop()
    except KeyboardInterrupt:
        print("\ngridclear demo: stopped; every service shut down.", flush=True)
        return 0
    except (ServiceStartError, ChildExitedError) as error:
        print(f"gridclear demo: {error}", file=sys.stderr)
        return 1
