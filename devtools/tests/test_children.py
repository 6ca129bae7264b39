"""Children started by spawn_child die with their parent, threads or not, and run as asked."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gridclear.devtools.children import spawn_child
from gridclear.devtools.waiting import wait_for


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_child_of_a_threaded_parent_dies_when_the_parent_is_killed(tmp_path: Path) -> None:
    """The parent runs threads (as a test run with paho or a server thread does)."""
    script = textwrap.dedent(
        f"""
        import threading, time
        from pathlib import Path
        from gridclear.devtools.children import spawn_child
        for _ in range(4):
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        child = spawn_child(["sleep", "600"], log_path=Path({str(tmp_path / "log")!r}),
                            cwd=Path({str(tmp_path)!r}))
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        # The wrapper execs the command in place: the pid is the command's own.
        wait_for(lambda: Path(f"/proc/{child}/comm").read_text().strip() == "sleep", what="exec")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    wait_for(lambda: not _alive(child), timeout_s=10, what="the orphan to die")


def test_the_child_runs_in_its_folder_with_its_environment(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = spawn_child(
        ["sh", "-c", 'echo "$GRIDCLEAR_PROBE $(pwd)"'],
        log_path=log,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "GRIDCLEAR_PROBE": "seen"},
    )
    assert child.wait(timeout=30) == 0
    assert log.read_text().strip() == f"seen {tmp_path}"


def test_a_missing_command_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gridclear-no-such-command"):
        spawn_child(["gridclear-no-such-command"], log_path=tmp_path / "log", cwd=tmp_path)
