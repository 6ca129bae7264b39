"""A bus whose port fails in an unexpected way fails its reads; it never hangs them."""

from __future__ import annotations

import asyncio
import os
import pty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridclear.edge.config import load_config
from gridclear.edge.modbus import MeterPool
from gridclear.shared.readings import Quality


@pytest.fixture
def pty_device() -> Iterator[str]:
    controller, device = pty.openpty()
    try:
        yield os.ttyname(device)
    finally:
        os.close(controller)
        os.close(device)


async def test_a_port_refusing_its_line_settings_fails_reads_without_hanging(
    pty_device: str, tmp_path: Path
) -> None:
    # A Linux pseudo-terminal refuses parity: pyserial raises termios.error (not an
    # OSError) from deep inside pymodbus's connect, as some USB adapters do too.
    config_file = tmp_path / "edge.toml"
    config_file.write_text(
        'device_id = "gw-1"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
        f'[[meters]]\nname = "m1"\ntransport = "rtu"\ndevice = "{pty_device}"\n'
        'parity = "E"\nunit = 1\nmodel = "sdm120"\ntimeout_s = 0.5\nretries = 0\n'
    )
    config = load_config(config_file)
    async with MeterPool(config.meters) as pool:
        first = await asyncio.wait_for(pool.read_once(), timeout=20)
        # The bus still serves requests after the failure: the next read fails the same way.
        second = await asyncio.wait_for(pool.read_once(), timeout=20)
        status = pool.status()["m1"]
    for readings in (first, second):
        assert len(readings) == 1
        assert Quality.READ_ERROR in readings[0].quality
        assert readings[0].import_wh is None
    assert status.consecutive_errors == 2
    assert dict(status.errors) == {"connection": 2}
