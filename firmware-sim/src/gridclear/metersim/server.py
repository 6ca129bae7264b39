"""The running simulator: simulated clock, Modbus TCP gateways, RTU lines on pseudo-terminals,
and a control channel to switch faults at run time.

Why not pymodbus's server: the meters' registers are computed from the
physics at each request's simulated time, and faults act on the frame (no
answer, a late answer, a corrupted CRC), per unit id, on one shared line.
pymodbus 3.x's datastore classes are deprecated for 4.0 and its request
handler keeps one "last request" slot per connection, so a delayed answer can
leave with a later request's transaction id. Modbus TCP and RTU framing is a
few dozen lines; we keep them here and reuse pymodbus only for the RTU CRC.
Clients are unaffected: the tests read this server with pymodbus's own clients.

Transports:

- **TCP gateway** (one per TCP bus): like a Modbus TCP to RS-485 gateway with
  a line behind it, it answers every unit id on its bus; a unit id with no
  meter gets exception 0x0B (gateway target device failed to respond).
  Requests are answered independently, so a slow meter delays only itself.
- **RTU line** (one per RTU bus): a pseudo-terminal whose slave side clients
  open like a USB RS-485 adapter. A frame ends after 3.5 character times of
  silence at the configured baud rate; frames with a bad CRC, for absent unit
  ids or broadcast (unit 0, which Eastron meters do not support) get no
  answer, as on a real line. Answers go out after the request's time on the
  wire and the meter's turnaround, paced at the baud rate.
- **Control** (optional, loopback TCP): JSON lines
  ``{"op": "fault", "meter": NAME, "kind": ...}``, ``{"op": "clear",
  "meter": NAME}`` and ``{"op": "status"}``; see docs/METERS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
import termios
import time
import tty
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymodbus.framer import FramerRTU

from gridclear.metersim.device import SimulatedMeter, exception_pdu
from gridclear.metersim.errors import ConfigError, ControlError
from gridclear.metersim.faults import FaultKind, parse_fault
from gridclear.metersim.maps import MODELS
from gridclear.metersim.physics import parse_profile
from gridclear.metersim.site import BusSpec, SiteSpec

__all__ = ["GATEWAY_NO_RESPONSE", "SimClock", "Simulator"]

GATEWAY_NO_RESPONSE = 0x0B


class SimClock:
    """Simulated UTC epoch seconds: ``start`` at launch, running ``speed`` times wall time.

    Built on the monotonic clock, so it never goes backwards when the wall
    clock is adjusted. ``speed`` 0 stops simulated time at ``start``.
    """

    def __init__(
        self, *, start: float, speed: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.start = start
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def now(self) -> float:
        return self.start + (self._monotonic() - self._origin) * self.speed

    def wall_seconds(self, simulated: float) -> float:
        """Wall-clock seconds that ``simulated`` seconds take (infinite when stopped)."""
        return simulated / self.speed if self.speed else float("inf")


class Bus:
    """The meters on one line, by unit id, and the line's counters."""

    def __init__(self, spec: BusSpec, meters: dict[int, SimulatedMeter]) -> None:
        self.spec = spec
        self.meters = meters
        self.counters: Counter[str] = Counter()
        self.endpoint = ""


class _TcpConnection(asyncio.Protocol):
    """One client connection to a TCP gateway: MBAP framing over the bus's meters."""

    def __init__(self, bus: Bus, clock: SimClock) -> None:
        self._bus = bus
        self._clock = clock
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._bus.counters["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 8:
            tid, protocol, length = struct.unpack_from(">HHH", buffer)
            if not 2 <= length <= 254:
                # Not Modbus TCP: no way to find the next frame, drop the connection.
                self._bus.counters["bad_frame"] += 1
                if self._transport is not None:
                    self._transport.close()
                buffer.clear()
                return
            if len(buffer) < 6 + length:
                return
            unit = buffer[6]
            pdu = bytes(buffer[7 : 6 + length])
            del buffer[: 6 + length]
            if protocol != 0:
                self._bus.counters["bad_protocol_id"] += 1
                continue
            self._request(tid, unit, pdu)

    def _request(self, tid: int, unit: int, pdu: bytes) -> None:
        bus = self._bus
        bus.counters["requests"] += 1
        meter = bus.meters.get(unit)
        if meter is None:
            bus.counters["absent_unit"] += 1
            function = pdu[0] if pdu else 0
            self._send(tid, unit, exception_pdu(function, GATEWAY_NO_RESPONSE))
            return
        try:
            reply = meter.answer(pdu, self._clock.now(), serial_line=False)
        except Exception as error:  # a simulator bug must not take the gateway down
            _report_internal_error(bus, meter.name, error)
            self._send(tid, unit, exception_pdu(pdu[0], 0x04))
            return
        if reply.behaviour.silent:
            return
        if reply.behaviour.delay_s > 0:
            self._loop.call_later(reply.behaviour.delay_s, self._send, tid, unit, reply.pdu)
        else:
            self._send(tid, unit, reply.pdu)

    def _send(self, tid: int, unit: int, pdu: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)


def _report_internal_error(bus: Bus, where: str, error: Exception) -> None:
    bus.counters["internal_error"] += 1
    print(f"gridclear-metersim: internal error at {where}: {error!r}", file=sys.stderr, flush=True)


def _crc(frame: bytes) -> bytes:
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


class RtuLine:
    """An RS-485 line on a pseudo-terminal pair: clients open :attr:`path`.

    The simulator keeps the slave side open too, so the line survives clients
    coming and going; bytes a departed client left unread are flushed when the
    next request arrives.
    """

    def __init__(self, bus: Bus, clock: SimClock) -> None:
        self._bus = bus
        self._clock = clock
        spec = bus.spec
        bits = 1 + 8 + (0 if spec.parity == "N" else 1) + spec.stopbits
        self.char_time = bits / spec.baud
        # Modbus over serial line v1.02, 2.5.1.1: fixed 1.75 ms above 19200 baud.
        self.frame_gap = 3.5 * self.char_time if spec.baud <= 19200 else 0.00175
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.link = spec.link
        self._buffer = bytearray()
        self._gap_timer: asyncio.TimerHandle | None = None
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink():
                    self.link.unlink()
            try:
                self.link.symlink_to(self.path)
            except OSError as error:
                name = self._bus.spec.name
                raise ConfigError(
                    f"bus {name!r}: cannot create link {self.link}: {error.strerror}",
                    reason="bad_site_file",
                ) from None
        self._loop.add_reader(self._master, self._readable)
        self._worker = asyncio.create_task(self._serve(), name=f"rtu-{self._bus.spec.name}")

    async def close(self) -> None:
        self._loop.remove_reader(self._master)
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        os.close(self._master)
        os.close(self._slave)
        if self.link is not None and self.link.is_symlink():
            with contextlib.suppress(OSError):
                self.link.unlink()

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        self._buffer += data
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        self._gap_timer = self._loop.call_later(self.frame_gap, self._frame_ended)

    def _frame_ended(self) -> None:
        self._gap_timer = None
        frame = bytes(self._buffer)
        self._buffer.clear()
        self._frames.put_nowait(frame)

    async def _serve(self) -> None:
        while True:
            frame = await self._frames.get()
            try:
                await self._process(frame)
            except Exception as error:  # a simulator bug must not take the line down
                _report_internal_error(self._bus, self._bus.spec.name, error)

    async def _process(self, frame: bytes) -> None:
        bus = self._bus
        bus.counters["frames"] += 1
        # A new request means the client is done with anything still unread.
        termios.tcflush(self._slave, termios.TCIFLUSH)
        if len(frame) < 4 or _crc(frame[:-2]) != frame[-2:]:
            bus.counters["bad_frame"] += 1
            return
        unit = frame[0]
        meter = bus.meters.get(unit)
        if meter is None:
            bus.counters["absent_unit" if unit else "broadcast_ignored"] += 1
            return
        reply = meter.answer(frame[1:-2], self._clock.now(), serial_line=True)
        if reply.behaviour.silent:
            return
        body = bytes((unit,)) + reply.pdu
        crc = _crc(body)
        if reply.behaviour.corrupt:
            crc = bytes((crc[0] ^ 0xFF, crc[1]))
        # The client wrote its request at once; on a real line it took this long.
        wire_in = len(frame) * self.char_time
        await asyncio.sleep(wire_in + bus.spec.turnaround_ms / 1000.0 + reply.behaviour.delay_s)
        await self._transmit(body + crc)

    async def _transmit(self, frame: bytes) -> None:
        # Pace the answer at the baud rate in small chunks, as a UART delivers it.
        chunk = max(1, round(0.004 / self.char_time))
        for offset in range(0, len(frame), chunk):
            part = frame[offset : offset + chunk]
            try:
                os.write(self._master, part)
            except (BlockingIOError, OSError):
                self._bus.counters["write_dropped"] += 1
                return
            await asyncio.sleep(len(part) * self.char_time)


class Simulator:
    """A site's meters served over their transports, until :meth:`close`.

    Use as ``async with Simulator(site) as sim:``; :meth:`describe` says what
    is served where (ports and device paths are known only after start).
    """

    def __init__(self, site: SiteSpec, *, control: tuple[str, int] | None = None) -> None:
        self.site = site
        start = site.start if site.start is not None else time.time()
        self.clock = SimClock(start=start, speed=site.speed)
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
            self.buses.append(Bus(bus_spec, meters))
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
        loop = asyncio.get_running_loop()
        for bus in self.buses:
            spec = bus.spec
            if spec.transport == "tcp":
                try:
                    server = await loop.create_server(
                        lambda bus=bus: _TcpConnection(bus, self.clock),  # type: ignore[misc]
                        host=spec.host,
                        port=spec.port,
                        reuse_address=True,
                        backlog=1024,
                    )
                except OSError as error:
                    raise ConfigError(
                        f"bus {spec.name!r}: cannot listen on {spec.host}:{spec.port}: "
                        f"{error.strerror}",
                        reason="cannot_listen",
                    ) from None
                self._servers.append(server)
                host, port = server.sockets[0].getsockname()[:2]
                bus.endpoint = f"{host}:{port}"
            else:
                line = RtuLine(bus, self.clock)
                self._lines.append(line)
                line.start()
                bus.endpoint = str(line.link or line.path)
                self._pty_paths[bus.spec.name] = line.path
        if self._control_address is not None:
            host, port = self._control_address
            try:
                server = await asyncio.start_server(self._control_client, host=host, port=port)
            except OSError as error:
                raise ConfigError(
                    f"control: cannot listen on {host}:{port}: {error.strerror}",
                    reason="cannot_listen",
                ) from None
            self._servers.append(server)
            name = server.sockets[0].getsockname()
            self.control_endpoint = (name[0], name[1])

    async def close(self) -> None:
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

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                try:
                    result: dict[str, Any] = {"ok": True, **self.command(json.loads(line))}
                except json.JSONDecodeError:
                    result = {"ok": False, "reason": "bad_command", "error": "not JSON"}
                except ControlError as error:
                    result = {"ok": False, "reason": error.reason, "error": str(error)}
                writer.write(json.dumps(result).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def write_ready_file(path: Path, description: dict[str, Any]) -> None:
    """Write the description atomically, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(description, indent=2) + "\n")
    temporary.replace(path)
