"""What an installer puts on a Pi: a hardened unit, a loadable example, a valid script."""

from __future__ import annotations

import subprocess
from collections import defaultdict

from gridclear.devtools import REPO_ROOT
from gridclear.edge.config import load_config

DEPLOY = REPO_ROOT / "deploy" / "edge"


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = defaultdict(list)
    for line in (DEPLOY / "gridclear-edge.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings[key.strip()].append(value.strip())
    return settings


def test_unit_runs_unprivileged_with_serial_access_only() -> None:
    unit = _unit()
    assert unit["User"] == ["gridclear"]
    assert unit["SupplementaryGroups"] == ["dialout"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["StateDirectory"] == ["gridclear"]  # the only writable place
    assert unit["DevicePolicy"] == ["closed"]


def test_unit_restarts_except_on_a_configuration_error() -> None:
    unit = _unit()
    assert unit["Restart"] == ["always"]
    # gridclear-edge run exits 2 for a bad configuration, key or outbox.
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["KillSignal"] == ["SIGTERM"]


def test_unit_starts_what_the_installer_installs() -> None:
    script = (DEPLOY / "install.sh").read_text()
    (exec_start,) = _unit()["ExecStart"]
    assert exec_start.startswith("/opt/gridclear-edge/bin/gridclear-edge run --config ")
    assert "prefix=/opt/gridclear-edge" in script
    assert exec_start.endswith("/etc/gridclear/edge.toml")


def test_example_configuration_loads() -> None:
    config = load_config(DEPLOY / "edge.toml.example")
    assert config.device_id
    assert config.meters


def test_install_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
