"""The command line: bad input is a clear error (exit 2, no traceback); signals stop cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gridclear.devtools.metersim import MetersimProcess

Metersim = Callable[..., MetersimProcess]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridclear.metersim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meter", "1:sdm999:pv"], "unknown meter model 'sdm999'"),
        (["--meter", "1:sdm630:tidal"], "unknown profile 'tidal'"),
        (["--meter", "0:sdm630:pv"], "unit id 0 is out of range"),
        (["--meter", "248:sdm630:pv"], "unit id 248 is out of range"),
        (["--meter", "1:sdm630:flat"], "flat:<watts>"),
        ([], "give at least one --meter"),
        (["--meter", "1:sdm630:pv", "--speed", "-1"], "speed must be"),
        (["--meter", "1:sdm630:pv", "--start-at", "2030-06-21T09:00:00Z"], "needs --start"),
    ],
)
def test_bad_serve_arguments_are_a_clear_error(args: list[str], message: str) -> None:
    result = run_cli("serve", "--port", "0", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_malformed_site_file_is_a_clear_error(tmp_path: Path) -> None:
    site = tmp_path / "broken.toml"
    site.write_text("[[bus]]\nname = 'x'\n[[bus.meter]]\nunit = 1\nmodel = 'sdm630'\n")
    result = run_cli("serve", "--site", str(site))
    assert result.returncode == 2
    assert "profile is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--meter", "1:sdm120:pv")
    assert result.returncode == 2
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_what_it_serves_and_stops_cleanly_on_a_signal(
    signum: int, tmp_path: Path
) -> None:
    sim = MetersimProcess(meters=["1-3:sdm630:household", "4:sunspec:pv"], workdir=tmp_path).start()
    port = sim.port
    sim.send_signal(signum)
    assert sim.wait(timeout=10) == 0
    output = sim.output()
    assert f"modbus-tcp 127.0.0.1:{port}" in output
    assert "unit 1-3 sdm630 household" in output
    assert "stopped" in output
    assert "Traceback" not in output


def test_fault_and_status_commands_drive_a_running_simulator(metersim: Metersim) -> None:
    sim = metersim(meters=["1:sdm630:flat:100"])
    control = f"{sim.control[0]}:{sim.control[1]}"
    switched = run_cli("fault", "--control", control, "tcp/1", "exception", "--code", "6")
    assert switched.returncode == 0, switched.stderr
    status = run_cli("status", "--control", control)
    assert '"fault": "exception"' in status.stdout
    unknown = run_cli("fault", "--control", control, "tcp/9", "timeout")
    assert unknown.returncode == 2
    assert "no meter named 'tcp/9'" in unknown.stderr
    cleared = run_cli("fault", "--control", control, "tcp/1", "clear")
    assert cleared.returncode == 0


def test_bad_control_commands_are_refused_without_harm(metersim: Metersim) -> None:
    sim = metersim(meters=["1:sdm630:flat:100"])
    with socket.create_connection(sim.control, timeout=5) as raw, raw.makefile("rwb") as stream:
        for line in (
            b"not json\n",
            b"[1]\n",
            b'{"op": "explode"}\n',
            b'{"op": "fault", "meter": "tcp/1", "kind": "slow", "delay_s": -3}\n',
        ):
            stream.write(line)
            stream.flush()
            assert b'"ok": false' in stream.readline()
    assert sim.status()["ok"] is True
