"""A ``gridclear-cloud`` command as a real process, its output read line by line, started
as a script starts a background job: through ``sh`` with SIGINT ignored."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from cloud.tests.ingest_support import wait_for

__all__ = ["CLI", "Process"]

CLI = str(Path(sys.executable).parent / "gridclear-cloud")


class Process:
    """A command started through ``sh`` with SIGINT ignored; its output read line by line."""

    def __init__(self, args: list[str], environment: dict[str, str]) -> None:
        """Start ``gridclear-cloud *args`` with ``environment``; stdout and stderr merged."""
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", "trap '' INT; exec \"$@\"", "sh", CLI, *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, *, timeout_s: float = 60.0) -> str:
        def seen() -> bool:
            assert self.popen.poll() is None, "\n".join(self.lines)
            return any(text in line for line in self.lines)

        wait_for(seen, timeout_s=timeout_s, what=f"{text!r} in the output")
        return next(line for line in self.lines if text in line)

    def stop(self, signum: int, *, timeout_s: float = 30.0) -> int:
        self.popen.send_signal(signum)
        try:
            code = self.popen.wait(timeout=timeout_s)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(10)
        assert self.popen.stdout is not None
        self.popen.stdout.close()
        return code
