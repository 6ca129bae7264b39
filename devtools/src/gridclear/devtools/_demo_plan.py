"""What the demo runs, worked out from the simulated site: pure functions, no I/O.

The simulator's ready file lists its buses and meters. Meters are named
``<household>-<purpose>`` (``house1-grid``, ``house1-pv``); each household gets
one gateway that reads its own meters off the street's Modbus TCP gateway, the
way an installer would wire a Pi per home.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["DemoGateway", "DemoMeter", "edge_config_toml", "gateways_from_site", "meter_role"]

Role = Literal["import", "export", "both"]


@dataclass(frozen=True)
class DemoMeter:
    name: str
    unit: int
    model: str
    host: str
    port: int
    role: Role


@dataclass(frozen=True)
class DemoGateway:
    device_id: str
    household: str
    meters: tuple[DemoMeter, ...]


def meter_role(name: str) -> Role:
    """A grid connection meter sees both directions; generation only exports."""
    purpose = name.rsplit("-", 1)[-1]
    if purpose == "grid":
        return "both"
    if purpose in ("pv", "battery"):
        return "export" if purpose == "pv" else "both"
    return "import"


def gateways_from_site(ready: Mapping[str, Any]) -> list[DemoGateway]:
    """One gateway per household, from the simulator's ready file (TCP buses only)."""
    households: dict[str, list[DemoMeter]] = {}
    for bus in ready["buses"]:
        if bus["transport"] != "tcp":
            continue
        for meter in bus["meters"]:
            household = meter["name"].rsplit("-", 1)[0]
            households.setdefault(household, []).append(
                DemoMeter(
                    name=meter["name"],
                    unit=int(meter["unit"]),
                    model=meter["model"],
                    host=bus["host"],
                    port=int(bus["port"]),
                    role=meter_role(meter["name"]),
                )
            )
    return [
        DemoGateway(device_id=f"gw-{household}", household=household, meters=tuple(meters))
        for household, meters in sorted(households.items())
    ]


def _toml_string(value: str | Path) -> str:
    # A JSON string of printable text is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=True)


def edge_config_toml(
    gateway: DemoGateway,
    *,
    key_file: Path,
    outbox: Path,
    mqtt_url: str,
    poll_interval_s: float = 1.0,
) -> str:
    """The gateway's configuration file, as an installer would write it."""
    lines = [
        f"# gridclear demo gateway for {gateway.household}",
        f"device_id = {_toml_string(gateway.device_id)}",
        f"key_file = {_toml_string(key_file)}",
        f"outbox = {_toml_string(outbox)}",
        "",
        "[mqtt]",
        f"url = {_toml_string(mqtt_url)}",
    ]
    for meter in gateway.meters:
        lines += [
            "",
            "[[meters]]",
            f"name = {_toml_string(meter.name)}",
            'transport = "tcp"',
            f"host = {_toml_string(meter.host)}",
            f"port = {meter.port}",
            f"unit = {meter.unit}",
            f"model = {_toml_string(meter.model)}",
            f"poll_interval_s = {poll_interval_s}",
        ]
    return "\n".join(lines) + "\n"


def summarize(gateways: Sequence[DemoGateway]) -> list[str]:
    """One line per gateway for the demo's 'what runs where'."""
    return [
        f"{g.device_id:<14} meters: "
        + ", ".join(f"{m.name} (unit {m.unit}, {m.model})" for m in g.meters)
        for g in gateways
    ]
