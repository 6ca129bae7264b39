"""Run ``gridclear-metersim serve`` as a child process and talk to it: for tests, demos, benchmarks.

:class:`MetersimProcess` starts the real command (``python -m gridclear.metersim``)
on free ports, waits until it has written its ready file (what it serves
where), and offers the run-time fault switches of its control port. It is
what the ``metersim`` pytest fixture returns. The simulator never outlives us
(:func:`gridclear.devtools.children.spawn_child`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from gridclear.devtools.children import spawn_child

__all__ = ["MetersimBus", "MetersimProcess", "MetersimStartError"]


class MetersimStartError(RuntimeError):
    """The simulator did not come up; the message carries its output."""


@dataclass(frozen=True, slots=True)
class MetersimBus:
    """One served line: TCP (``host``, ``port``) or RTU (``path`` of the pty, optional ``link``)."""

    name: str
    transport: str
    units: tuple[int, ...]
    meters: tuple[str, ...]
    host: str | None = None
    port: int | None = None
    path: str | None = None
    link: str | None = None
    baud: int | None = None


class MetersimProcess:
    """A running ``gridclear-metersim serve``; stop it with :meth:`stop` or a ``with`` block.

    Give either ``meters`` (``UNIT:MODEL:PROFILE`` specs served on one TCP
    port, chosen free unless ``port`` is given) or ``site`` (a site file).
    """

    def __init__(
        self,
        *,
        meters: Sequence[str] = (),
        site: Path | None = None,
        speed: float | None = None,
        seed: int | None = None,
        start: str | None = None,
        start_at: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="gridclear-metersim-"))
        self._ready = self._workdir / f"metersim-{os.getpid()}-{id(self)}.json"
        self.log_path = self._workdir / f"metersim-{id(self)}.log"
        args = [sys.executable, "-m", "gridclear.metersim", "serve", "--control", f"{host}:0"]
        args += ["--ready-file", str(self._ready)]
        if site is not None:
            args += ["--site", str(site)]
        else:
            args += ["--host", host, "--port", str(port)]
            for meter in meters:
                args += ["--meter", meter]
        if speed is not None:
            args += ["--speed", repr(speed)]
        if seed is not None:
            args += ["--seed", str(seed)]
        if start is not None:
            args += ["--start", start]
        if start_at is not None:
            args += ["--start-at", start_at]
        args += list(extra_args)
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None
        self.description: dict[str, Any] = {}

    def start(self, *, timeout: float = 30.0) -> Self:
        """Start and wait until every transport listens. Raises :class:`MetersimStartError`."""
        self._ready.unlink(missing_ok=True)
        self._process = spawn_child(self.args, log_path=self.log_path, cwd=self._workdir)
        deadline = time.monotonic() + timeout
        while not self._ready.exists():
            if self._process.poll() is not None:
                raise MetersimStartError(
                    f"gridclear-metersim exited with {self._process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise MetersimStartError(
                    f"gridclear-metersim not ready in {timeout} s:\n{self.output()}"
                )
            time.sleep(0.02)
        self.description = json.loads(self._ready.read_text())
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def output(self) -> str:
        """Everything the simulator printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, *, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout``)."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        self._ready.unlink(missing_ok=True)
        if self._own_workdir and process.returncode == 0:
            shutil.rmtree(self._workdir, ignore_errors=True)
        return process.returncode

    def send_signal(self, signum: int) -> None:
        """Send a signal to the simulator (SIGINT and SIGTERM stop it cleanly)."""
        assert self._process is not None, "not started"
        self._process.send_signal(signum)

    def wait(self, *, timeout: float = 10.0) -> int:
        """Wait for the simulator to exit; its exit code."""
        assert self._process is not None, "not started"
        return self._process.wait(timeout=timeout)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def buses(self) -> list[MetersimBus]:
        return [
            MetersimBus(
                name=b["name"],
                transport=b["transport"],
                units=tuple(m["unit"] for m in b["meters"]),
                meters=tuple(m["name"] for m in b["meters"]),
                host=b.get("host"),
                port=b.get("port"),
                path=b.get("path"),
                link=b.get("link"),
                baud=b.get("baud"),
            )
            for b in self.description["buses"]
        ]

    def bus(self, name: str) -> MetersimBus:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(name)

    @property
    def host(self) -> str:
        """Host of the first TCP bus."""
        return next(b.host for b in self.buses if b.transport == "tcp" and b.host)

    @property
    def port(self) -> int:
        """Port of the first TCP bus."""
        return next(b.port for b in self.buses if b.transport == "tcp" and b.port)

    @property
    def pty(self) -> str:
        """Device path of the first RTU bus (open it with a serial Modbus client)."""
        return next(b.path for b in self.buses if b.transport == "rtu" and b.path)

    @property
    def control(self) -> tuple[str, int]:
        control = self.description["control"]
        return control["host"], control["port"]

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one control command; raises ``RuntimeError`` when it is refused."""
        from gridclear.metersim.cli import control_request

        answer = control_request(self.control, request)
        if not answer.get("ok"):
            raise RuntimeError(f"metersim refused {request}: {answer.get('error')}")
        return answer

    def fault(self, meter: str, kind: str, **params: float | int) -> dict[str, Any]:
        """Switch a fault on ``meter`` now: ``timeout``, ``exception`` (code=),
        ``slow`` (delay_s=), ``reset``, ``bad-crc``; ``duration_s=`` is simulated seconds."""
        return self.command({"op": "fault", "meter": meter, "kind": kind, **params})

    def clear(self, meter: str) -> dict[str, Any]:
        """Switch ``meter``'s run-time fault off."""
        return self.command({"op": "clear", "meter": meter})

    def status(self) -> dict[str, Any]:
        """Counters per bus and meter, and the simulated time."""
        return self.command({"op": "status"})
