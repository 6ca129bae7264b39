"""The cloud's long-running commands as a script starts them in the background: SIGINT
inherited as ignored (``cmd &`` in a non-interactive shell, ``trap '' INT``). Each must
still stop cleanly on SIGINT, as it does on SIGTERM, and log in the configured format."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud.tests.api_support import fresh_database
from cloud.tests.process_support import Process

from gridclear.cloud import env
from gridclear.cloud.storage.migrations import migrate


def _ignores_sigint(pid: int) -> bool:
    """Whether the process's SIGINT disposition is "ignored" (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError("no SigIgn line")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def cloud_env(postgres_admin_url: str, redis_url: str, mqtt_url: str) -> Iterator[dict[str, str]]:
    with fresh_database(postgres_admin_url) as url:
        migrate(url)
        yield {
            **os.environ,
            env.DATABASE_URL: url,
            env.REDIS_URL: redis_url,
            env.MQTT_URL: mqtt_url,
            env.REDIS_KEY_PREFIX: f"test:signals:{uuid.uuid4().hex[:8]}:",
            env.ARGON2_TIME_COST: "1",
            env.ARGON2_MEMORY_KIB: "1024",
            env.LOG_LEVEL: "INFO",
            env.LOG_FORMAT: "json",
        }


COMMANDS = {
    "scheduler": (["scheduler", "--interval", "0.2"], "market lock"),
    "ingest": (
        ["ingest", "--client-id", "gridclear-cloud:signals", "--group", "signals"],
        "ingest worker gridclear-cloud:signals",
    ),
    "serve": (["serve", "--host", "127.0.0.1", "--port", "{port}"], "Application startup"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_started_with_sigint_ignored_still_stops_on_sigint(
    command: str, cloud_env: dict[str, str]
) -> None:
    args, ready = COMMANDS[command]
    process = Process([a.replace("{port}", str(_free_port())) for a in args], cloud_env)
    try:
        process.wait_for_line(ready)
        assert not _ignores_sigint(process.popen.pid)
    finally:
        code = process.stop(signal.SIGINT)
    assert code == 0, "\n".join(process.lines)
    # One format for every process: each line a JSON object, with no terminal escapes.
    for line in process.lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line
        assert "\x1b" not in json.dumps(entry, ensure_ascii=False), line
        assert "color_message" not in entry, line
