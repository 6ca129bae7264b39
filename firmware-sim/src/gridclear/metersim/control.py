"""The control channel's wire: JSON lines over loopback TCP, one answer line per command.

Commands are executed by a callable the simulator provides
(:meth:`~gridclear.metersim.server.Simulator.command`); this module only reads
lines, decodes them and writes the answers:

- ``{"ok": true, ...}`` with what the command returned;
- ``{"ok": false, "reason": ..., "error": ...}`` when the line is not JSON
  (``bad_command``) or the command raised :class:`ControlError`.

The channel has no authentication (docs/METERS.md): keep it on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from gridclear.metersim.errors import ConfigError, ControlError

__all__ = ["Execute", "start_control"]

Execute = Callable[[Any], dict[str, Any]]
"""Runs one decoded command and returns its result; raises :class:`ControlError`."""


async def start_control(execute: Execute, *, host: str, port: int) -> asyncio.Server:
    """Serve the control channel on ``host:port`` until the server closes.

    Raises :class:`ConfigError` (``cannot_listen``) when the address cannot be bound.
    """

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_client(execute, reader, writer)

    try:
        return await asyncio.start_server(client, host=host, port=port)
    except OSError as error:
        raise ConfigError(
            f"control: cannot listen on {host}:{port}: {error.strerror}", reason="cannot_listen"
        ) from None


def _answer(execute: Execute, line: bytes) -> dict[str, Any]:
    try:
        return {"ok": True, **execute(json.loads(line))}
    except json.JSONDecodeError:
        return {"ok": False, "reason": "bad_command", "error": "not JSON"}
    except ControlError as error:
        return {"ok": False, "reason": error.reason, "error": str(error)}


async def _serve_client(
    execute: Execute, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            writer.write(json.dumps(_answer(execute, line)).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
