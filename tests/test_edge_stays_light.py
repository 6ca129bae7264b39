"""The gateway must never import the cloud's stack: ruff refuses it under edge/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridclear.devtools import REPO_ROOT

RUFF = str(Path(sys.executable).parent / "ruff")


def _lint_as_edge_module(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            RUFF,
            "check",
            "--select",
            "TID251",
            "--output-format",
            "concise",
            "--stdin-filename",
            "edge/src/gridclear/edge/probe.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    "statement",
    [
        "import fastapi",
        "from starlette.requests import Request",
        "import psycopg.pool",
        "from redis.asyncio import Redis",
        "import solana.rpc.api",
        "from solders.pubkey import Pubkey",
        "from gridclear.cloud import env",
    ],
)
def test_cloud_stack_imports_are_refused_in_edge(statement: str) -> None:
    result = _lint_as_edge_module(statement + "\n")
    assert result.returncode == 1
    assert "TID251" in result.stdout


def test_the_edge_own_dependencies_are_allowed() -> None:
    source = "import pymodbus\nimport aiomqtt\nimport nacl.signing\nimport gridclear.shared\n"
    result = _lint_as_edge_module(source)
    assert result.returncode == 0, result.stdout
