"""Transports: the sockets and serial lines that carry a bus's frames, with a real line's timing.

The layer pymodbus calls the transport. A transport owns its I/O and its
timing and nothing else: bytes become frames through :mod:`.framing`, frames
become replies through :mod:`.handling`, and replies go back out.

- :func:`start_tcp_gateway` serves one TCP bus like a Modbus TCP to RS-485
  gateway. Requests are answered independently and each answer carries the
  transaction id it was asked with, so a slow meter delays only itself. A
  stream that is not Modbus TCP is dropped; a frame with a protocol id other
  than 0 is skipped.
- :class:`RtuLine` serves one RTU bus on a pseudo-terminal whose slave side
  clients open like a USB RS-485 adapter. A frame ends after the line's frame
  gap of silence; frames are handled one at a time, in order, as on a shared
  line. An answer leaves after the request's time on the wire, the meter's
  turnaround and any fault delay, paced at the baud rate.

Counters on the bus: ``connections``, ``requests``, ``bad_protocol_id`` (TCP);
``frames``, ``write_dropped`` (RTU); ``bad_frame`` (both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty

from gridclear.metersim.clock import SimClock
from gridclear.metersim.device import Reply
from gridclear.metersim.errors import ConfigError, FrameError
from gridclear.metersim.framing import decode_rtu, decode_tcp, encode_rtu, encode_tcp, rtu_timing
from gridclear.metersim.handling import Bus, handle_request

__all__ = ["RtuLine", "start_tcp_gateway"]


async def start_tcp_gateway(bus: Bus, *, clock: SimClock) -> asyncio.Server:
    """Listen on the bus's host and port and answer for its meters until the server closes.

    Raises :class:`ConfigError` (``cannot_listen``) when the address cannot be bound.
    """
    spec = bus.spec
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            lambda: _TcpConnection(bus, clock),
            host=spec.host,
            port=spec.port,
            reuse_address=True,
            backlog=1024,
        )
    except OSError as error:
        raise ConfigError(
            f"bus {spec.name!r}: cannot listen on {spec.host}:{spec.port}: {error.strerror}",
            reason="cannot_listen",
        ) from None


class _TcpConnection(asyncio.Protocol):
    """One client connection to a TCP gateway."""

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
        self._buffer += data
        while True:
            try:
                frame, size = decode_tcp(self._buffer)
            except FrameError:
                # Not Modbus TCP: no way to find the next frame, drop the connection.
                self._bus.counters["bad_frame"] += 1
                if self._transport is not None:
                    self._transport.close()
                self._buffer.clear()
                return
            if frame is None:
                return
            del self._buffer[:size]
            if frame.protocol != 0:
                self._bus.counters["bad_protocol_id"] += 1
                continue
            self._bus.counters["requests"] += 1
            reply = handle_request(
                self._bus, unit=frame.unit, pdu=frame.pdu, now=self._clock.now(), serial_line=False
            )
            self._answer(frame.transaction, frame.unit, reply)

    def _answer(self, transaction: int, unit: int, reply: Reply) -> None:
        behaviour = reply.behaviour
        if behaviour.silent:
            return
        if behaviour.delay_s > 0:
            self._loop.call_later(behaviour.delay_s, self._send, transaction, unit, reply.pdu)
        else:
            self._send(transaction, unit, reply.pdu)

    def _send(self, transaction: int, unit: int, pdu: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(encode_tcp(transaction=transaction, unit=unit, pdu=pdu))


class RtuLine:
    """An RS-485 line on a pseudo-terminal pair: clients open :attr:`path`.

    Opened by the constructor, served from :meth:`start` until :meth:`close`.
    The simulator keeps the slave side open too, so the line survives clients
    coming and going; bytes a departed client left unread are flushed when the
    next request arrives.
    """

    def __init__(self, bus: Bus, *, clock: SimClock) -> None:
        self._bus = bus
        self._clock = clock
        spec = bus.spec
        timing = rtu_timing(baud=spec.baud, parity=spec.parity, stopbits=spec.stopbits)
        self.char_time = timing.char_time
        self.frame_gap = timing.frame_gap
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
        """Create the ``link`` symlink if configured and start serving.

        Raises :class:`ConfigError` (``bad_site_file``) when the link cannot be made.
        """
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
        """Stop serving, close the pseudo-terminal and remove the link."""
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
        except OSError:  # includes BlockingIOError and InterruptedError
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
                self._bus.report_internal_error(self._bus.spec.name, error)

    async def _process(self, frame: bytes) -> None:
        bus = self._bus
        bus.counters["frames"] += 1
        # A new request means the client is done with anything still unread.
        termios.tcflush(self._slave, termios.TCIFLUSH)
        try:
            request = decode_rtu(frame)
        except FrameError:
            bus.counters["bad_frame"] += 1
            return
        reply = handle_request(
            bus, unit=request.unit, pdu=request.pdu, now=self._clock.now(), serial_line=True
        )
        if reply.behaviour.silent:
            return
        answer = encode_rtu(unit=request.unit, pdu=reply.pdu, corrupt_crc=reply.behaviour.corrupt)
        # The client wrote its request at once; on a real line it took this long.
        wire_in = len(frame) * self.char_time
        await asyncio.sleep(wire_in + bus.spec.turnaround_ms / 1000.0 + reply.behaviour.delay_s)
        await self._transmit(answer)

    async def _transmit(self, frame: bytes) -> None:
        # Pace the answer at the baud rate in small chunks, as a UART delivers it.
        chunk = max(1, round(0.004 / self.char_time))
        for offset in range(0, len(frame), chunk):
            part = frame[offset : offset + chunk]
            try:
                os.write(self._master, part)
            except OSError:  # includes BlockingIOError: the client is not reading
                self._bus.counters["write_dropped"] += 1
                return
            await asyncio.sleep(len(part) * self.char_time)
