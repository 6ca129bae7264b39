"""Run ``gridclear-cloud ledger serve`` as a child process: for tests, the demo and benchmarks.

:class:`LedgerNodeProcess` starts the real command (the installed ``gridclear-cloud
ledger serve``) on a free port chosen by the node itself (``--port 0``), waits until
it has written its ready file (the URL it serves), and can stop it cleanly
(SIGTERM), kill it (``kill -9``) and start it again on the same state directory.
It is what the ``ledger_node`` pytest fixture returns. The node never outlives us
(:func:`gridclear.devtools.children.spawn_child`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from gridclear.devtools.children import log_tail, spawn_child

__all__ = ["LedgerNodeProcess", "LedgerNodeStartError"]


class LedgerNodeStartError(RuntimeError):
    """The ledger node did not come up; the message carries the end of its log."""


class LedgerNodeProcess:
    """A ``gridclear-cloud ledger serve`` on its own state directory.

    ``state_dir`` persists across :meth:`stop`/:meth:`kill` and :meth:`start`, as a
    real node's does. ``dev`` serves ``requestAirdrop``; ``tick_ms`` is the block time.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        state_dir: Path | None = None,
        dev: bool = True,
        tick_ms: int = 400,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gridclear-ledger-"))
        self.state_dir = state_dir or self.workdir / "ledger-state"
        self.log_path = self.workdir / "ledger-node.log"
        self._ready = self.workdir / "ledger-node.ready.json"
        self.dev = dev
        self.tick_ms = tick_ms
        self.host = host
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        """0 until the first start; a restart keeps the port, as a real node's clients expect."""

    @property
    def args(self) -> list[str]:
        command = str(Path(sys.executable).parent / "gridclear-cloud")
        args = [command, "ledger", "serve"]
        args += ["--host", self.host, "--port", str(self.port), "--state-dir", str(self.state_dir)]
        args += ["--tick-ms", str(self.tick_ms), "--ready-file", str(self._ready)]
        return [*args, "--dev"] if self.dev else args

    def start(self, *, timeout: float = 60.0) -> Self:
        """Start and wait until it serves; raises :class:`LedgerNodeStartError`."""
        self._ready.unlink(missing_ok=True)
        self._process = spawn_child(self.args, log_path=self.log_path, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not self._ready.exists():
            if self._process.poll() is not None:
                raise LedgerNodeStartError(
                    f"the ledger node exited with {self._process.returncode}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise LedgerNodeStartError(
                    f"the ledger node was not ready in {timeout} s:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)
        self.url = json.loads(self._ready.read_text())["url"]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def output(self) -> str:
        """Everything the node logged so far (every run on this workdir)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, *, timeout: float = 30.0) -> int:
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
        return process.returncode

    def kill(self) -> None:
        """``kill -9``: no shutdown, no last commit."""
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait()
        self._process = None
