"""The ``keygen`` and ``status`` subcommands (``run`` is :func:`gridclear.edge.agent.run_agent`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridclear.edge.outbox import Outbox, OutboxError
from gridclear.edge.status import outbox_report
from gridclear.shared.errors import KeyFileError
from gridclear.shared.keys import DeviceKey, create_key_file, load_key_file


def _public_json(key: DeviceKey) -> str:
    return json.dumps(
        {"kid": key.kid, "public_key": key.public.x, "jwk": key.public.jwk()}, indent=2
    )


def keygen_command(args: argparse.Namespace) -> int:
    path = Path(args.key)
    try:
        key = load_key_file(path) if args.public else create_key_file(path)
    except KeyFileError as error:
        hint = (
            ""
            if args.public
            else f"\nto print its public key: gridclear-edge keygen --key {path} --public"
        )
        exists = "already exists" in error.problem
        print(f"gridclear-edge keygen: {error}{hint if exists else ''}", file=sys.stderr)
        return 1
    print(_public_json(key))
    return 0


def status_command(args: argparse.Namespace) -> int:
    from gridclear.edge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"gridclear-edge status: {error}", file=sys.stderr)
        return 2
    if not config.outbox.exists():
        print(
            f"gridclear-edge status: no outbox at {config.outbox} yet (has the agent run?)",
            file=sys.stderr,
        )
        return 1
    try:
        with Outbox.open(
            config.outbox, signer=None, max_bytes=int(config.outbox_max_mb * 2**20)
        ) as outbox:
            report = outbox_report(outbox)
    except OutboxError as error:
        print(f"gridclear-edge status: {error}", file=sys.stderr)
        return 1
    report = {"device_id": config.device_id, "outbox_file": str(config.outbox), **report}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report, now_ms=time.time_ns() // 1_000_000))
    return 0


def _when(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "never"
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_ago(now_ms - ms)})"


def _ago(ms: int) -> str:
    seconds = max(ms // 1000, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _size(count: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _text(report: dict[str, Any], *, now_ms: int) -> str:
    box = report["outbox"]
    lines = [
        f"device {report['device_id']}   outbox {report['outbox_file']}",
        f"outbox: {box['depth']} message(s) waiting ({_size(box['bytes'])} of "
        f"{_size(box['max_bytes'])}{', OVER THE LIMIT' if box['over_limit'] else ''}); "
        f"last sequence number {box['last_seq']}",
        f"oldest unsent reading: {_when(box['oldest_unsent_ms'], now_ms)}",
        f"readings thinned to survive outages: {box['thinned_readings']}",
    ]
    agent = report["agent"]
    if agent is None:
        lines.append("agent: has not reported yet")
        return "\n".join(lines)
    lines += [
        f"agent: last update {_when(agent['ts_ms'], now_ms)}, pid {agent['pid']}",
        f"broker: {'connected' if agent['connected'] else 'NOT connected'}, "
        f"{agent['connects']} connection(s), {agent['acked']} message(s) acknowledged, "
        f"last acknowledgement {_when(agent['last_ack_ms'], now_ms)}",
    ]
    if agent.get("last_error"):
        lines.append(f"last broker error: {agent['last_error']}")
    meters: dict[str, dict[str, Any]] = agent.get("meters") or {}
    if meters:
        lines.append("meters:")
        width = max(len(name) for name in meters)
        for name, meter in meters.items():
            errors = meter.get("consecutive_errors", 0)
            state = "ok" if errors == 0 else f"{errors} failed sample(s) in a row"
            line = (
                f"  {name:<{width}}  {meter.get('address', '')}  {state}; "
                f"last good sample {_when(meter.get('last_success_ms'), now_ms)}"
            )
            if meter.get("last_error"):
                line += f"; last error: {meter['last_error']}"
            lines.append(line)
    return "\n".join(lines)
