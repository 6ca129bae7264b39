"""MeterPool: every configured meter polled on its own schedule, independently.

Each meter has one poller task. A poller samples its meter every
``poll_interval_s`` (on a fixed schedule, so samples do not drift; a sample
that overruns skips the missed slots rather than bursting), turns the answer
into a :class:`~gridclear.shared.readings.Reading` and hands it to the sink.
Pollers only meet on a shared bus, where the bus owner serves them in turn
(:mod:`._transport`); meters on different buses never wait for each other.

Failures, in order of escalation:

- a request that fails is retried up to ``retries`` times with a doubling pause
  (0.1 s, 0.2 s, ...), during which the bus serves other meters;
- a sample whose reads still fail is delivered with the ``read_error`` flag and
  whatever it could read (nothing, usually), so the gap is visible downstream;
- a meter that keeps failing is sampled without retries and less often (the
  interval doubles per failed sample up to ``max_backoff_s``), so a dead meter
  on a shared RS-485 line costs the live ones one timeout now and then, not
  three every second. The first good answer restores the normal schedule.

A cumulative register (import or export energy) lower than the last value read
from the same meter flags the sample ``counter_reset``: a replaced or reset
meter, never a negative delta. The new value is the baseline from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import NoReturn, Self

from gridclear.edge.config import BusKey, MeterConfig
from gridclear.edge.modbus._profiles import (
    EASTRON_PROFILES,
    EASTRON_SERIAL,
    Block,
    Function,
    Profile,
    Values,
)
from gridclear.edge.modbus._sunspec import SunSpecError, discover
from gridclear.edge.modbus._transport import Bus, BusSettings, ModbusReadError
from gridclear.shared.readings import Quality, Reading

__all__ = ["MeterPool", "MeterStatus", "Sink", "counter_went_back", "next_delay"]

_log = logging.getLogger("gridclear.edge.modbus")

Sink = Callable[[Reading], Awaitable[None] | None]
"""Receives every completed sample; may be a plain or an async function."""

_FIRST_RETRY_PAUSE_S = 0.1
# Modbus exceptions worth another try: the device said "busy" or "acknowledge,
# working on it". Others (illegal address, ...) will not change on a retry.
_TRANSIENT_EXCEPTIONS = frozenset({5, 6})


def next_delay(interval_s: float, consecutive_errors: int, max_backoff_s: float) -> float:
    """Seconds until the next sample: the interval, doubled per failed sample, capped.

    The cap never shortens the configured interval (a meter polled every
    5 minutes is not polled faster because it failed).
    """
    if consecutive_errors <= 0:
        return interval_s
    factor: int = 2 ** min(consecutive_errors - 1, 30)
    backoff = interval_s * factor
    return min(backoff, max(max_backoff_s, interval_s))


def counter_went_back(previous: int | None, current: int | None) -> bool:
    """Whether a cumulative register went backwards (a reset or a meter swap)."""
    return previous is not None and current is not None and current < previous


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """A snapshot of one meter's health, for ``status`` and the logs."""

    name: str
    address: str
    """Where it is: ``tcp://host:port#unit`` or ``rtu:/dev/ttyX#unit``."""
    model: str
    """The configured model; for SunSpec, the discovered one once known (``sunspec-203``)."""
    serial: str | None
    """The serial number the meter reports, once read; None until then or if it has none."""
    last_success_ms: int | None
    """UTC ms of the last sample read completely; None if none yet."""
    consecutive_errors: int
    """Failed samples since the last complete one."""
    last_error: str | None
    """Text of the most recent failure (kept after recovery, for diagnosis)."""
    samples: int
    """Samples taken, good or not."""
    failed_samples: int
    """Samples flagged read_error."""
    counter_resets: int
    """Samples flagged counter_reset."""
    errors: Mapping[str, int]
    """Failed requests by reason: timeout, exception, connection, bad_response, unsupported."""


@dataclass(slots=True)
class _Meter:
    config: MeterConfig
    bus: Bus
    profile: Profile | None = None
    serial: str | None = None
    serial_tried: bool = False
    last_import: int | None = None
    last_export: int | None = None
    last_success_ms: int | None = None
    consecutive_errors: int = 0
    last_error: str | None = None
    samples: int = 0
    failed_samples: int = 0
    counter_resets: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MeterPool:
    """Polls a set of meters. Use as an async context manager:

    .. code-block:: python

        async with MeterPool(config.meters) as pool:
            await pool.run(sink)            # forever; one sink call per sample
            readings = await pool.read_once()
            pool.status()["m1"].consecutive_errors

    ``clock`` gives wall-clock seconds since the epoch for sample times (tests
    may pass their own). ``max_backoff_s`` caps the slowed-down schedule of a
    failing meter. Nothing is opened before ``__aenter__``.
    """

    def __init__(
        self,
        meters: Sequence[MeterConfig],
        *,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 30.0,
    ) -> None:
        names = [m.name for m in meters]
        if len(set(names)) != len(names):
            raise ValueError("meter names must be unique")
        self._configs = tuple(meters)
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._meters: dict[str, _Meter] = {}
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        _quiet_pymodbus()
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            buses: dict[BusKey, Bus] = {}
            for meter in self._configs:
                if meter.bus not in buses:
                    buses[meter.bus] = await stack.enter_async_context(Bus(_settings(meter)))
                self._meters[meter.name] = _Meter(config=meter, bus=buses[meter.bus])
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    def _require_open(self) -> None:
        if self._stack is None:
            raise RuntimeError("use MeterPool inside 'async with'")

    async def run(self, sink: Sink) -> NoReturn:
        """Poll every meter at its own interval until cancelled, calling ``sink`` per sample.

        An exception raised by the sink stops the whole pool and propagates
        (inside an ExceptionGroup): losing readings silently would be worse.
        """
        self._require_open()
        async with asyncio.TaskGroup() as group:
            for meter in self._meters.values():
                group.create_task(self._poll_forever(meter, sink), name=f"poll {meter.config.name}")
        raise AssertionError("pollers never return")  # pragma: no cover

    async def read_once(self) -> list[Reading]:
        """Sample every meter once, concurrently; the readings in configuration order."""
        self._require_open()
        return list(await asyncio.gather(*(self._sample(m) for m in self._meters.values())))

    def status(self) -> Mapping[str, MeterStatus]:
        """A snapshot of every meter's health, by meter name."""
        return MappingProxyType({name: _snapshot(m) for name, m in self._meters.items()})

    async def _poll_forever(self, meter: _Meter, sink: Sink) -> NoReturn:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            reading = await self._sample(meter)
            delivered = sink(reading)
            if inspect.isawaitable(delivered):
                await delivered
            next_at += next_delay(
                meter.config.poll_interval_s, meter.consecutive_errors, self._max_backoff_s
            )
            now = loop.time()
            if next_at < now:
                # Overran (slow bus, slow sink): skip missed slots instead of bursting.
                missed = (now - next_at) // meter.config.poll_interval_s + 1
                next_at += missed * meter.config.poll_interval_s
            await asyncio.sleep(next_at - now)

    async def _sample(self, meter: _Meter) -> Reading:
        # One sample per meter at a time: read_once() during run() must not
        # interleave with the poller and confuse the counter-reset baseline.
        async with meter.lock:
            return await self._sample_locked(meter)

    async def _sample_locked(self, meter: _Meter) -> Reading:
        values, error = await self._measure(meter)
        ts_ms = max(0, round(self._clock() * 1000))
        quality: set[Quality] = set()
        meter.samples += 1
        if error is not None:
            quality.add(Quality.READ_ERROR)
            meter.failed_samples += 1
            if meter.consecutive_errors == 0:
                _log.warning(
                    "meter %s: %s",
                    meter.config.name,
                    error,
                    extra={"meter": meter.config.name, "event": "meter_failing"},
                )
            meter.consecutive_errors += 1
            meter.last_error = error
        else:
            if meter.consecutive_errors:
                _log.info(
                    "meter %s answers again after %d failed samples",
                    meter.config.name,
                    meter.consecutive_errors,
                    extra={"meter": meter.config.name, "event": "meter_recovered"},
                )
            meter.consecutive_errors = 0
            meter.last_success_ms = ts_ms
            if not meter.serial_tried:
                await self._identify(meter)
        if self._counters_went_back(meter, values):
            quality.add(Quality.COUNTER_RESET)
        return Reading(
            meter=meter.config.name,
            ts_ms=ts_ms,
            import_wh=values.import_wh,
            export_wh=values.export_wh,
            power_w=values.power_w,
            voltage_v=values.voltage_v,
            current_a=values.current_a,
            frequency_hz=values.frequency_hz,
            quality=frozenset(quality),
        )

    async def _measure(self, meter: _Meter) -> tuple[Values, str | None]:
        """Read and decode one sample: the values, and what went wrong (None if nothing)."""
        error: str | None = None
        try:
            profile = await self._profile(meter)
            words: list[list[int]] = []
            for block in profile.blocks:
                if error is None:
                    try:
                        words.append(await self._read(meter, block))
                        continue
                    except ModbusReadError as exc:
                        error = str(exc)
                # A block that could not be read decodes as "not implemented"
                # (0xFFFF words are NaN floats); later blocks are not tried, the
                # meter has just failed to answer.
                words.append([0xFFFF] * block.count)
            values = profile.decode(words)
        except ModbusReadError as exc:
            return Values(), str(exc)
        except SunSpecError as exc:
            meter.errors["unsupported"] += 1
            return Values(), str(exc)
        if values.problems and error is None:
            error = "; ".join(values.problems)
        return values, error

    def _counters_went_back(self, meter: _Meter, values: Values) -> bool:
        """Check the cumulative registers against the last ones, and move the baseline."""
        went_back = counter_went_back(meter.last_import, values.import_wh) or counter_went_back(
            meter.last_export, values.export_wh
        )
        if went_back:
            meter.counter_resets += 1
            _log.warning(
                "meter %s: cumulative energy went backwards (import %s -> %s Wh, "
                "export %s -> %s Wh): reset or replaced meter",
                meter.config.name,
                meter.last_import,
                values.import_wh,
                meter.last_export,
                values.export_wh,
                extra={"meter": meter.config.name, "event": "counter_reset"},
            )
        if values.import_wh is not None:
            meter.last_import = values.import_wh
        if values.export_wh is not None:
            meter.last_export = values.export_wh
        return went_back

    async def _read(self, meter: _Meter, block: Block, *, retry: bool = True) -> list[int]:
        config = meter.config
        # A meter that is already failing gets one attempt per sample: retries
        # would only hold the bus longer for the meters that still answer.
        attempts = 1 + (config.retries if retry and meter.consecutive_errors == 0 else 0)
        for attempt in range(attempts):
            try:
                return await meter.bus.read(block, unit=config.unit, timeout_s=config.timeout_s)
            except ModbusReadError as exc:
                meter.errors[exc.reason] += 1
                transient = exc.reason != "exception" or exc.exception_code in _TRANSIENT_EXCEPTIONS
                if not transient or attempt + 1 == attempts:
                    raise
                await asyncio.sleep(_FIRST_RETRY_PAUSE_S * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _profile(self, meter: _Meter) -> Profile:
        if meter.profile is not None:
            return meter.profile
        model = meter.config.model
        if model in EASTRON_PROFILES:
            meter.profile = EASTRON_PROFILES[model]
            return meter.profile

        async def read_holding(address: int, count: int) -> list[int]:
            return await self._read(meter, Block(Function.HOLDING, address, count))

        device = await discover(read_holding)
        meter.profile = device.meter()
        meter.serial = device.common.serial if device.common and device.common.serial else None
        meter.serial_tried = True
        _log.info(
            "meter %s: SunSpec model %d at %d (%s %s, serial %s)",
            meter.config.name,
            device.meter().model_id,
            device.meter().address,
            device.common.manufacturer if device.common else "?",
            device.common.model if device.common else "?",
            meter.serial or "?",
            extra={"meter": meter.config.name, "event": "sunspec_discovered"},
        )
        return meter.profile

    async def _identify(self, meter: _Meter) -> None:
        """Read an Eastron meter's serial number once, best effort (status and logs only)."""
        meter.serial_tried = True
        if meter.config.model not in EASTRON_PROFILES:
            return
        try:
            words = await self._read(meter, EASTRON_SERIAL, retry=False)
        except ModbusReadError:
            return
        meter.serial = str((words[0] << 16) | words[1])


def _settings(meter: MeterConfig) -> BusSettings:
    if meter.transport == "tcp":
        assert meter.host is not None
        return BusSettings(
            kind="tcp",
            host=meter.host,
            port=meter.port,
            gap_s=meter.gap_s,
            connect_timeout_s=meter.timeout_s,
        )
    assert meter.device is not None
    return BusSettings(
        kind="rtu",
        device=meter.device,
        baudrate=meter.baudrate,
        parity=meter.parity,
        stopbits=meter.stopbits,
        gap_s=meter.gap_s,
        connect_timeout_s=meter.timeout_s,
    )


def _snapshot(meter: _Meter) -> MeterStatus:
    return MeterStatus(
        name=meter.config.name,
        address=meter.config.address,
        model=meter.profile.model if meter.profile is not None else meter.config.model,
        serial=meter.serial,
        last_success_ms=meter.last_success_ms,
        consecutive_errors=meter.consecutive_errors,
        last_error=meter.last_error,
        samples=meter.samples,
        failed_samples=meter.failed_samples,
        counter_resets=meter.counter_resets,
        errors=MappingProxyType(dict(meter.errors)),
    )


def _quiet_pymodbus() -> None:
    """Keep pymodbus's own per-request error lines out of the gateway's log.

    Every failure is already counted in :class:`MeterStatus` and logged once per
    change of state; pymodbus would log each timeout again, every second, for as
    long as a meter is down. An operator who set a level for "pymodbus" keeps it.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)
