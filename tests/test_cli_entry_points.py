"""Each distribution's console script answers --help and --version as installed."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

SCRIPTS = {
    "gridclear-edge": "gridclear-edge",
    "gridclear-cloud": "gridclear-cloud",
    "gridclear-metersim": "gridclear-metersim",
    "gridclear-dev": "gridclear-devtools",
}


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.mark.parametrize(("script", "distribution"), SCRIPTS.items())
def test_version_names_the_installed_distribution(script: str, distribution: str) -> None:
    result = subprocess.run(
        [_script(script), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"{script} {version(distribution)}"


PURPOSE = {
    "gridclear-edge": "signs each batch of readings",
    "gridclear-cloud": "double auction",
    "gridclear-metersim": "real register maps",
    "gridclear-dev": "throwaway servers",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_describes_the_tool(script: str) -> None:
    result = subprocess.run([_script(script), "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith(f"usage: {script}")
    assert PURPOSE[script] in " ".join(result.stdout.split())


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_command_prints_help_and_fails(script: str) -> None:
    result = subprocess.run([_script(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert f"usage: {script}" in result.stdout
