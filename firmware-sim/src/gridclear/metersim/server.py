"""Serving a site: its meters on their buses, each bus on its transport, and the control channel.

The top of the layers pymodbus also has (framing, transport, request handling,
serving): :class:`Simulator` builds the meters of a :class:`SiteSpec` on one
:class:`SimClock`, starts a TCP gateway or an RTU line per bus
(:mod:`.transport`) and the optional control channel (:mod:`.control`), and
closes them all. It also answers what is served where (:meth:`Simulator.describe`),
how it went (:meth:`Simulator.status`) and executes control commands
(:meth:`Simulator.command`).

Why not pymodbus's server: the meters' registers are computed from the
physics at each request's simulated time, and faults act on the frame (no
answer, a late answer, a corrupted CRC), per unit id, on one shared line.
pymodbus 3.x's datastore classes are deprecated for 4.0 and its request
handler keeps one "last request" slot per connection, so a delayed answer can
leave with a later request's transaction id. Modbus TCP and RTU framing is a
few dozen lines (:mod:`.framing`, with pymodbus's CRC). Clients are
unaffected: the tests read this server with pymodbus's own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from gridclear.metersim.clock import SimClock
from gridclear.metersim.control import start_control
from gridclear.metersim.device import SimulatedMeter
from gridclear.metersim.errors import ConfigError, ControlError
from gridclear.metersim.faults import FaultKind, parse_fault
from gridclear.metersim.handling import Bus
from gridclear.metersim.maps import MODELS
from gridclear.metersim.physics import parse_profile
from gridclear.metersim.site import SiteSpec
from gridclear.metersim.transport import RtuLine, start_tcp_gateway

__all__ = ["Simulator"]


class Simulator:
    """A site's meters served over their transports, until :meth:`close`.

    Use as ``async with Simulator(site) as sim:``; :meth:`describe` says what
    is served where (ports and device paths are known only after start).
    """

    def __init__(self, site: SiteSpec, *, control: tuple[str, int] | None = None) -> None:
        self.site = site
        if site.start is not None and site.start_at is not None:
            self.clock = SimClock.anchored(
                epoch=site.start, epoch_at=site.start_at, speed=site.speed
            )
        else:
            launch = site.start if site.start is not None else time.time()
            self.clock = SimClock(start=launch, speed=site.speed)
        start = self.clock.start
        self.buses: list[Bus] = []
        self.meters: dict[str, SimulatedMeter] = {}
        scheduled: dict[str, list[Any]] = {}
        for spec in site.faults:
            scheduled.setdefault(spec.meter, []).append(spec.fault)
        for bus_spec in site.buses:
            meters: dict[int, SimulatedMeter] = {}
            for m in bus_spec.meters:
                meter = SimulatedMeter(
                    model=MODELS[m.model],
                    unit=m.unit,
                    name=m.name,
                    profile=parse_profile(m.profile, location=site.location),
                    profile_spec=m.profile,
                    seed=site.seed,
                    bus=bus_spec.name,
                    start=start,
                    location=site.location,
                    faults=scheduled.get(m.name, []),
                )
                meters[m.unit] = meter
                self.meters[m.name] = meter
            self.buses.append(Bus(bus_spec, meters=meters))
        self._control_address = control
        self.control_endpoint: tuple[str, int] | None = None
        self._servers: list[asyncio.Server] = []
        self._lines: list[RtuLine] = []
        self._pty_paths: dict[str, str] = {}

    async def __aenter__(self) -> Simulator:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every bus's transport and the control channel.

        Raises :class:`ConfigError` (``cannot_listen``, ``bad_site_file``) when
        one cannot start; what did start is closed by :meth:`close`.
        """
        for bus in self.buses:
            spec = bus.spec
            if spec.transport == "tcp":
                server = await start_tcp_gateway(bus, clock=self.clock)
                self._servers.append(server)
                host, port = server.sockets[0].getsockname()[:2]
                bus.endpoint = f"{host}:{port}"
            else:
                line = RtuLine(bus, clock=self.clock)
                self._lines.append(line)
                line.start()
                bus.endpoint = str(line.link or line.path)
                self._pty_paths[bus.spec.name] = line.path
        if self._control_address is not None:
            host, port = self._control_address
            server = await start_control(self.command, host=host, port=port)
            self._servers.append(server)
            name = server.sockets[0].getsockname()
            self.control_endpoint = (name[0], name[1])

    async def close(self) -> None:
        """Stop serving: close every server and line (safe to call more than once)."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2.0)
        self._servers.clear()
        for line in self._lines:
            await line.close()
        self._lines.clear()

    # ------------------------------------------------------------ description

    def describe_path(self, bus: str) -> str:
        """The device path of an RTU bus's pseudo-terminal (the one clients open)."""
        return self._pty_paths[bus]

    def describe(self) -> dict[str, Any]:
        """What is served where, as JSON-ready data (the ``--ready-file`` content)."""
        buses = []
        for bus in self.buses:
            entry: dict[str, Any] = {
                "name": bus.spec.name,
                "transport": bus.spec.transport,
                "meters": [
                    {
                        "name": m.name,
                        "unit": m.unit,
                        "model": m.model.name,
                        "profile": m.profile_spec,
                        "serial": m.serial,
                    }
                    for m in bus.meters.values()
                ],
            }
            if bus.spec.transport == "tcp":
                host, _, port = bus.endpoint.rpartition(":")
                entry.update(host=host, port=int(port))
            else:
                entry.update(
                    path=self._pty_paths[bus.spec.name],
                    link=str(bus.spec.link) if bus.spec.link else None,
                    baud=bus.spec.baud,
                    parity=bus.spec.parity,
                    stopbits=bus.spec.stopbits,
                )
            buses.append(entry)
        control = None
        if self.control_endpoint is not None:
            control = {"host": self.control_endpoint[0], "port": self.control_endpoint[1]}
        return {
            "pid": os.getpid(),
            "seed": self.site.seed,
            "speed": self.site.speed,
            "start": self.clock.start,
            "control": control,
            "buses": buses,
        }

    def status(self) -> dict[str, Any]:
        """Counters per bus, and per meter that was asked something or has a fault on."""
        now = self.clock.now()
        meters: dict[str, Any] = {}
        for name, meter in self.meters.items():
            fault = meter.faults.active(now)
            if meter.counters or fault is not None:
                meters[name] = {
                    "counters": dict(meter.counters),
                    "serial": meter.serial,
                    "fault": fault.kind.value if fault is not None else None,
                }
        return {
            "simulated_time": now,
            "buses": {b.spec.name: dict(b.counters) for b in self.buses},
            "meters": meters,
        }

    # ---------------------------------------------------------------- control

    def command(self, request: Any) -> dict[str, Any]:
        """Execute one control command (already JSON-decoded). Raises :class:`ControlError`."""
        if not isinstance(request, dict):
            raise ControlError("a command is a JSON object", reason="bad_command")
        op = request.get("op")
        if op == "status":
            return self.status()
        if op not in ("fault", "clear"):
            raise ControlError(
                f"unknown op {op!r} (known: fault, clear, status)", reason="bad_command"
            )
        name = request.get("meter")
        meter = self.meters.get(name) if isinstance(name, str) else None
        if meter is None:
            raise ControlError(f"no meter named {name!r}", reason="unknown_meter")
        now = self.clock.now()
        if op == "clear":
            meter.switch_fault(None, now=now)
            return {"meter": name, "fault": None}
        fields = {k: v for k, v in request.items() if k not in ("op", "meter")}
        try:
            fault = parse_fault(fields, where=f"fault for {name}")
        except ConfigError as error:
            raise ControlError(str(error), reason=error.reason) from None
        serial_line = any(
            b.spec.transport == "rtu" and meter in b.meters.values() for b in self.buses
        )
        if fault.kind is FaultKind.BAD_CRC and not serial_line:
            raise ControlError(
                f"{name}: bad-crc needs an RTU line (Modbus TCP has no CRC)", reason="bad_fault"
            )
        meter.switch_fault(fault, now=now)
        return {"meter": name, "fault": fault.kind.value, "serial": meter.serial}
