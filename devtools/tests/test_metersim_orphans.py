"""A simulator started through MetersimProcess never outlives whoever started it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_simulator_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from gridclear.devtools.metersim import MetersimProcess
        sim = MetersimProcess(meters=["1:sdm120:flat:100"], workdir=Path({str(tmp_path)!r}))
        sim.start()
        print(sim.description["pid"], flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        simulator = int(parent.stdout.readline())
        assert _alive(simulator)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(simulator) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(simulator), "the simulator outlived the process that started it"
