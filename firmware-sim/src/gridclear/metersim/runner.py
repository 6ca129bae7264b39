"""``gridclear-metersim serve``: start a site, say what runs where, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridclear.metersim.server import Simulator
from gridclear.metersim.site import SiteSpec

__all__ = ["run", "summarise_units"]


def summarise_units(entries: list[tuple[int, str]]) -> list[str]:
    """Group consecutive units with the same label: ``["1-40 sdm630 household", ...]``."""
    lines: list[str] = []
    ordered = sorted(entries)
    for _, group in itertools.groupby(
        enumerate(ordered), key=lambda item: (item[1][0] - item[0], item[1][1])
    ):
        members = [entry for _, entry in group]
        first, last = members[0][0], members[-1][0]
        units = str(first) if first == last else f"{first}-{last}"
        lines.append(f"{units} {members[0][1]}")
    return lines


def _describe(sim: Simulator) -> str:
    site = sim.site
    start = datetime.fromtimestamp(sim.clock.start, UTC).isoformat().replace("+00:00", "Z")
    speed = "stopped" if site.speed == 0 else f"{site.speed:g}x"
    lines = [
        f"gridclear-metersim: serving {site.meter_count} meters "
        f"(seed {site.seed}, speed {speed}, simulated start {start})"
    ]
    for bus in sim.buses:
        spec = bus.spec
        if spec.transport == "tcp":
            where = f"modbus-tcp {bus.endpoint}"
        else:
            framing = f"{spec.baud} 8{spec.parity}{spec.stopbits}"
            where = f"modbus-rtu {sim.describe_path(spec.name)} {framing}"
            if spec.link is not None:
                where += f" (link {spec.link})"
        lines.append(f"  bus {spec.name}: {where}")
        entries = [
            (
                m.unit,
                f"{m.model.name} {m.profile_spec}"
                + (f" [{m.name}]" if m.name != f"{spec.name}/{m.unit}" else ""),
            )
            for m in bus.meters.values()
        ]
        lines.extend(f"    unit {text}" for text in summarise_units(entries))
    if sim.control_endpoint is not None:
        host, port = sim.control_endpoint
        lines.append(
            f"  control: {host}:{port} (gridclear-metersim fault --control {host}:{port} ...)"
        )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _write_ready_file(path: Path, description: dict[str, Any]) -> None:
    """Write the description atomically, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(description, indent=2) + "\n")
    temporary.replace(path)


async def _serve(site: SiteSpec, control: tuple[str, int] | None, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    async with Simulator(site, control=control) as sim:
        print(_describe(sim), flush=True)
        if ready_file is not None:
            _write_ready_file(ready_file, sim.describe())
        await stop.wait()
    print("gridclear-metersim: stopped.", flush=True)


def run(site: SiteSpec, *, control: tuple[str, int] | None, ready_file: Path | None) -> int:
    """Serve ``site`` until SIGINT or SIGTERM; 0 on a clean stop.

    Raises :class:`ConfigError` when a transport cannot start (port in use, ...).
    """
    asyncio.run(_serve(site, control, ready_file))
    sys.stdout.flush()
    return 0
