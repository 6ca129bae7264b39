"""The workshop (gridclear-devtools) stays out of the product; the edge's tests stay off the cloud.

The cloud image is built by running the Dockerfile's build stage here, without
Docker: its COPY lines into a scratch folder, then its RUN line, with the same uv.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridclear.cloud import env as cloud_env
from gridclear.devtools import REPO_ROOT
from gridclear.devtools import env as devtools_env

DOCKERFILE = REPO_ROOT / "deploy" / "cloud" / "Dockerfile"
UV_VERSION = "0.13.9"


def _uv() -> str:
    """The uv script/bootstrap installs (script/_common.sh finds it the same way)."""
    found = shutil.which("uv")
    if found:
        return found
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    tools = Path(os.environ.get("GRIDCLEAR_TOOLS") or Path(data) / "gridclear" / "tools")
    uv = tools / f"uv-{UV_VERSION}" / "bin" / "uv"
    assert uv.is_file(), f"no uv at {uv}: run script/bootstrap"
    return str(uv)


def _build_stage() -> tuple[list[tuple[list[str], str]], list[str], dict[str, str]]:
    """The first stage's COPY lines (sources, target), RUN commands and ENV settings."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text.split("\nFROM ")[1]  # from the first FROM to the second
    copies, runs, environment = [], [], {}
    for line in stage.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "COPY":
            copies.append((words[1:-1], words[-1]))
        elif words[0] == "RUN" and "uv sync" in line:
            runs.append(line.removeprefix("RUN").strip())
        elif words[0] == "ENV":
            environment |= dict(re.findall(r"(\w+)=(\S+)", line))
    return copies, runs, environment


@pytest.fixture(scope="module")
def cloud_image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the cloud image's build stage installs, built from this checkout."""
    scratch = tmp_path_factory.mktemp("cloud-image")
    source, prefix = scratch / "src", scratch / "opt"
    source.mkdir()
    copies, runs, environment = _build_stage()
    assert runs, "the Dockerfile's build stage runs no uv sync"
    for sources, target in copies:
        for name in sources:
            origin = REPO_ROOT / name
            destination = source / target / (origin.name if target.endswith("/") else "")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(
                    origin,
                    destination,
                    ignore=shutil.ignore_patterns("__pycache__", "tests"),
                    dirs_exist_ok=True,
                )
            else:
                shutil.copyfile(origin, destination)
    uv_dir = str(Path(_uv()).parent)
    run_env = {
        **os.environ,
        **environment,
        "UV_PROJECT_ENVIRONMENT": str(prefix),
        "UV_NO_PROGRESS": "1",
        "PATH": f"{uv_dir}{os.pathsep}{os.environ['PATH']}",
    }
    run_env.pop("VIRTUAL_ENV", None)
    run_env.pop("UV_COMPILE_BYTECODE", None)  # the same files, without the compile time
    for command in runs:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=source,
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    return prefix


def test_the_cloud_image_holds_no_devtools_module(cloud_image_env: Path) -> None:
    python = cloud_image_env / "bin" / "python"
    probe = (
        "import importlib.util as u, gridclear.cloud;"
        "print(u.find_spec('gridclear.devtools') is None, u.find_spec('gridclear.edge') is None)"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]
    assert not (cloud_image_env / "bin" / "gridclear-dev").exists()
    assert not list(cloud_image_env.rglob("gridclear_devtools*"))


def test_the_cloud_command_offers_no_demo(cloud_image_env: Path) -> None:
    result = subprocess.run(
        [cloud_image_env / "bin" / "gridclear-cloud", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = re.findall(r"^ {4}([a-z][\w-]*)", result.stdout, re.MULTILINE)
    assert "serve" in names
    assert "demo" not in names
    assert "participants" not in names


def test_edge_tests_run_without_importing_the_cloud() -> None:
    """A run of the edge's tests loads the plugin and the shared helpers, never the cloud."""
    probe = (
        "import sys, pytest\n"
        "code = pytest.main(['-q', '-p', 'no:randomly', '-p', 'no:cacheprovider',"
        " 'edge/tests/test_config.py'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'redis')"
        " or m.startswith('gridclear.cloud'))\n"
        "assert 'gridclear.devtools.pytest_plugin' in sys.modules, 'the plugin did not load'\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(int(code))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_helpers_edge_tests_use_import_no_cloud() -> None:
    modules = ["localservices", "metersim", "mqtt", "net", "waiting", "children"]
    probe = (
        "import sys\n"
        + "".join(f"import gridclear.devtools.{m}\n" for m in modules)
        + "print(sorted(m for m in sys.modules if m.startswith('gridclear.cloud')"
        " or m.split('.')[0] in ('psycopg', 'redis')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL", "MQTT_URL"])
def test_servers_are_named_by_the_cloud_own_variables(name: str) -> None:
    assert getattr(devtools_env, name) == getattr(cloud_env, name)


def test_script_demo_runs_the_workshop_command() -> None:
    script = (REPO_ROOT / "script" / "demo").read_text()
    command = next(line for line in script.splitlines() if line.startswith("exec "))
    assert shlex.split(command)[1:3] == [".venv/bin/gridclear-dev", "demo"]
