"""Channels to meters: one owner per bus, requests in turn, a gap between them.

A *bus* is one physical or logical channel: an RS-485 line (a serial device)
or one Modbus TCP endpoint (a meter, or a TCP-to-RTU gateway fronting several
unit ids). Whatever the number of meters on it, a bus has exactly one owner
task holding the pymodbus client. Pollers put requests in its queue and await
the answer; the owner sends them one at a time, first come first served, and
keeps ``gap_s`` of silence between the end of one exchange and the next
request. Two masters talking at once on RS-485 garble both frames, and many
TCP gateways serve one request at a time, so this is the only safe shape.

Each request carries its meter's own timeout. Retries are *not* done here (the
pymodbus client is built with ``retries=0``): the poller retries with a pause
between attempts, during which the bus serves the other meters instead of
waiting for the slow one.

Errors are :class:`ModbusReadError` with a stable ``reason`` code:
``timeout``, ``exception`` (the device answered with a Modbus exception),
``connection`` (cannot open the port or connect) and ``bad_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from gridclear.edge.errors import GridclearEdgeError
from gridclear.edge.modbus._profiles import Block, Function

__all__ = ["Bus", "BusSettings", "MeterTransport", "ModbusReadError", "Reason"]

_log = logging.getLogger("gridclear.edge.modbus")

Reason = Literal["timeout", "exception", "connection", "bad_response"]

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusReadError(GridclearEdgeError):
    """A read that produced no usable registers. ``code`` is a stable code for counting."""

    code: Reason = "bad_response"

    def __init__(self, reason: Reason, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.code = reason
        self.exception_code = exception_code

    @property
    def reason(self) -> Reason:
        """``code`` under its older name."""
        return self.code


class MeterTransport(Protocol):
    """What a poller needs from a channel: read one block from one unit."""

    async def read(self, block: Block, *, unit: int, timeout_s: float) -> list[int]:
        """The block's registers, or :class:`ModbusReadError`."""
        ...


@dataclass(frozen=True, slots=True)
class BusSettings:
    """How to open a bus. ``kind`` tcp uses host/port, rtu uses device and the line settings."""

    kind: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    gap_s: float = 0.0
    connect_timeout_s: float = 3.0

    @property
    def label(self) -> str:
        if self.kind == "rtu":
            return f"rtu:{self.device}"
        return f"tcp://{self.host}:{self.port}"


@dataclass(slots=True)
class _Request:
    block: Block
    unit: int
    timeout_s: float
    answer: asyncio.Future[list[int]] = field(repr=False)


class Bus:
    """The single owner of one channel (see the module docstring).

    Use as ``async with Bus(settings) as bus: await bus.read(...)``. Nothing is
    opened before ``__aenter__``; the connection is made on the first request
    and remade after it is lost.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._owner: asyncio.Task[None] | None = None
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_exchange_end = 0.0

    async def __aenter__(self) -> Self:
        self._owner = asyncio.create_task(self._serve(), name=f"modbus {self.settings.label}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owner is not None:
            self._owner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._owner
            self._owner = None
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.answer.done():
                request.answer.set_exception(
                    ModbusReadError("connection", f"{self.settings.label}: bus closed")
                )
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self, block: Block, *, unit: int, timeout_s: float) -> list[int]:
        if self._owner is None or self._owner.done():
            raise ModbusReadError("connection", f"{self.settings.label}: bus is not open")
        answer: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(block, unit, timeout_s, answer))
        return await answer

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            request = await self._queue.get()
            if request.answer.done():  # the poller gave up waiting (cancelled)
                continue
            wait = self._last_exchange_end + self.settings.gap_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                registers = await self._exchange(request)
            except ModbusReadError as exc:
                if not request.answer.done():
                    request.answer.set_exception(exc)
            except Exception as exc:
                # Anything else (a serial port refusing its line settings raises
                # termios.error, which is not an OSError) must fail this request, never
                # the owner: a dead owner would leave every later request waiting forever.
                _log.warning("%s: unexpected %r; reconnecting", self.settings.label, exc)
                self._drop_client()
                if not request.answer.done():
                    request.answer.set_exception(
                        ModbusReadError("connection", f"{self.settings.label}: {exc}")
                    )
            else:
                if not request.answer.done():
                    request.answer.set_result(registers)
            finally:
                self._last_exchange_end = loop.time()

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.settings
        # reconnect_delay=0: pymodbus must not reconnect in the background; the
        # owner reconnects on the next request, so a dead bus costs nothing while idle.
        if s.kind == "tcp":
            return AsyncModbusTcpClient(
                s.host,
                port=s.port,
                timeout=s.connect_timeout_s,
                retries=0,
                reconnect_delay=0,
                name=s.label,
            )
        return AsyncModbusSerialClient(
            s.device,
            baudrate=s.baudrate,
            bytesize=8,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=s.connect_timeout_s,
            retries=0,
            reconnect_delay=0,
            name=s.label,
        )

    async def _connected(self, timeout_s: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        self._client = client = self._new_client()
        client.comm_params.timeout_connect = timeout_s
        try:
            async with asyncio.timeout(timeout_s + 1.0):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            _log.debug("connect to %s failed: %r", self.settings.label, exc)
        if not ok:
            client.close()
            self._client = None
            raise ModbusReadError("connection", f"{self.settings.label}: cannot connect")
        return client

    async def _exchange(self, request: _Request) -> list[int]:
        client = await self._connected(request.timeout_s)
        block, unit = request.block, request.unit
        # The client's wait for an answer is its comm_params.timeout_connect; set
        # per request because meters sharing a bus may have different timeouts.
        client.comm_params.timeout_connect = request.timeout_s
        kind = block.function.name.lower()
        what = f"{self.settings.label}#{unit} {kind} {block.address}+{block.count}"
        try:
            # The outer limit only guards against a request that never returns;
            # pymodbus enforces the real timeout itself.
            async with asyncio.timeout(request.timeout_s * 2 + 1.0):
                if block.function is Function.HOLDING:
                    response = await client.read_holding_registers(
                        block.address, count=block.count, device_id=unit
                    )
                else:
                    response = await client.read_input_registers(
                        block.address, count=block.count, device_id=unit
                    )
        except (TimeoutError, ModbusIOException) as exc:
            # pymodbus reports a missing answer and a mismatched one (wrong unit
            # or transaction id) with the same exception class; only its text differs.
            if isinstance(exc, ModbusIOException) and "no response" not in str(exc).lower():
                raise ModbusReadError("bad_response", f"{what}: {exc}") from None
            raise ModbusReadError(
                "timeout", f"{what}: no answer within {request.timeout_s:g} s"
            ) from None
        except ConnectionException as exc:
            self._drop()
            raise ModbusReadError("connection", f"{what}: {exc}") from None
        except ModbusException as exc:
            raise ModbusReadError("bad_response", f"{what}: {exc}") from None
        if response.isError():
            code = response.exception_code
            name = _EXCEPTION_NAMES.get(code, "unknown exception")
            raise ModbusReadError(
                "exception",
                f"{what}: device answered exception {code} ({name})",
                exception_code=code,
            )
        registers: Sequence[int] = response.registers
        if len(registers) != block.count:
            raise ModbusReadError(
                "bad_response",
                f"{what}: answer has {len(registers)} registers, expected {block.count}",
            )
        return list(registers)

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
