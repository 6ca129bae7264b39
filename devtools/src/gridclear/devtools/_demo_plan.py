"""What the demo runs, worked out from the simulated site: pure functions, no I/O.

The simulator's ready file lists its buses and meters. Meters are named
``<household>-<purpose>`` (``house1-grid``, ``house1-pv``); each household gets
one gateway that reads its own meters off the street's Modbus TCP gateway, the
way an installer would wire a Pi per home.

**One simulated time.** The simulator's registers, the gateways' sample and
signing times and the market's slots all follow one :class:`SimulatedTime`: a
speed, an epoch, and the wall-clock instant at which it was the epoch, given to
every process (``--start``/``--start-at``, the edge's ``[simulation]`` table,
``--epoch``/``--epoch-at``), so they agree whenever each started and a traded
slot's interval energy is measured in the same slot. :func:`demo_time` picks
the epoch: the morning hour of the site nearest to now, so that the first
minutes of a demo, whenever it is run, have sunshine and sellers; simulated
time starts within 12 hours of real time, and readings stay within what the
cloud accepts (:func:`max_clock_ahead_s`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEMO_HORIZON_S",
    "DemoGateway",
    "DemoMeter",
    "SimulatedTime",
    "demo_time",
    "edge_config_toml",
    "gateways_from_site",
    "max_clock_ahead_s",
    "meter_role",
]

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


@dataclass(frozen=True)
class SimulatedTime:
    """Simulated time is ``epoch`` at the wall-clock instant ``epoch_at``, ``speed`` x faster."""

    speed: float
    epoch: datetime
    epoch_at: datetime

    def at(self, wall: datetime) -> datetime:
        """The simulated time at the wall-clock time ``wall``."""
        return self.epoch + (wall - self.epoch_at) * self.speed

    @staticmethod
    def iso(moment: datetime) -> str:
        """RFC 3339 in UTC with a ``Z``, as every process's option takes it."""
        return moment.isoformat().replace("+00:00", "Z")


def demo_time(
    now: datetime, *, speed: float, longitude: float, solar_hour: float = 9.0
) -> SimulatedTime:
    """Start simulated time at ``solar_hour`` local mean solar time (at ``longitude``), the
    occurrence nearest to ``now`` (at most 12 hours away), running ``speed`` x from ``now``.

    At 9:00 the site's PV systems export for about six simulated hours (six wall minutes at
    60x) in any season, so the first slots traded have sellers. Within 12 hours of real
    time, the gateways' first signatures are never older than their keys' validity (a day
    before registration) and never far ahead of the cloud's clock.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    # Local mean solar time runs longitude/15 hours ahead of UTC.
    solar_now = now + timedelta(hours=longitude / 15.0)
    midnight = solar_now.replace(hour=0, minute=0, second=0, microsecond=0)
    target = midnight + timedelta(hours=solar_hour)
    if target - solar_now > timedelta(hours=12):
        target -= timedelta(days=1)
    elif solar_now - target > timedelta(hours=12):
        target += timedelta(days=1)
    epoch = target - timedelta(hours=longitude / 15.0)
    return SimulatedTime(
        speed=speed,
        epoch=epoch.replace(second=0, microsecond=0),
        epoch_at=now.replace(microsecond=0),
    )


DEMO_HORIZON_S = 7 * 86_400
"""Wall seconds of demo within which every reading is accepted (a week)."""


def max_clock_ahead_s(clock: SimulatedTime, *, horizon_s: float = DEMO_HORIZON_S) -> float:
    """The demo ingest worker's ``--max-clock-ahead-s``: how far ahead of the wall clock a
    reading signed within ``horizon_s`` wall seconds of ``epoch_at`` can be, plus the
    production margin (10 minutes) for the clocks' error.

    At 60x simulated time gains 59 s a second: a day of demo is two months ahead. After
    ``horizon_s`` readings are refused as ``implausible_time``; restart the demo then.
    """
    lead_s = (clock.epoch - clock.epoch_at).total_seconds()
    return max(0.0, lead_s + (clock.speed - 1.0) * horizon_s) + 600.0


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
    simulation: SimulatedTime | None = None,
) -> str:
    """The gateway's configuration file, as an installer would write it.

    With ``simulation``, a development gateway on the demo's simulated time (a
    gateway in production refuses the ``[simulation]`` table).
    """
    lines = [
        f"# gridclear demo gateway for {gateway.household}",
        f"device_id = {_toml_string(gateway.device_id)}",
        f"key_file = {_toml_string(key_file)}",
        f"outbox = {_toml_string(outbox)}",
    ]
    if simulation is not None:
        lines += [
            'environment = "development"',
            "",
            "# The demo's one simulated time, shared with the meters and the market.",
            "[simulation]",
            f"speed = {simulation.speed!r}",
            f"epoch = {SimulatedTime.iso(simulation.epoch)}",
            f"epoch_at = {SimulatedTime.iso(simulation.epoch_at)}",
        ]
    lines += [
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
