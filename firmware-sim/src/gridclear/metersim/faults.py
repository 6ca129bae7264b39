"""Faults a meter can be told to show, and the decision they make for each request.

Pure data and logic: a :class:`Fault` says what goes wrong and, when it comes
from a site file, when (in simulated seconds after the start). A
:class:`FaultPlan` holds one meter's scheduled faults plus the one switched on
at run time, and answers two questions: what to do with a request at simulated
time ``t`` (:meth:`FaultPlan.behaviour`), and which one-shot events (counter
resets) fell due up to ``t`` (:meth:`FaultPlan.due_resets`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gridclear.metersim.errors import ConfigError

__all__ = ["ANSWER", "Behaviour", "Fault", "FaultKind", "FaultPlan", "parse_fault"]


class FaultKind(StrEnum):
    TIMEOUT = "timeout"
    """The meter does not answer at all (the client times out)."""
    EXCEPTION = "exception"
    """The meter answers every request with a Modbus exception (``code``)."""
    SLOW = "slow"
    """The meter answers correctly, but ``delay_s`` wall-clock seconds late."""
    RESET = "reset"
    """The meter is replaced: a new serial, energy registers from zero. One-shot."""
    BAD_CRC = "bad-crc"
    """RTU only: the answer's CRC is corrupted, so the client must drop it."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault. ``after_s``/``duration_s`` are simulated seconds (from the start for
    scheduled faults, from the moment of switching for run-time ones); no
    duration means until cleared."""

    kind: FaultKind
    code: int = 0x04
    delay_s: float = 2.0
    after_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.code <= 0x0B:
            raise ConfigError(
                f"fault exception code must be 1..11, not {self.code}", reason="bad_fault"
            )
        for name, value in (("delay_s", self.delay_s), ("after_s", self.after_s)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"fault {name} must be >= 0, not {value}", reason="bad_fault")
        if self.duration_s is not None and (
            not math.isfinite(self.duration_s) or self.duration_s <= 0
        ):
            raise ConfigError(
                f"fault duration_s must be > 0, not {self.duration_s}", reason="bad_fault"
            )


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What to do with one request."""

    silent: bool = False
    exception: int | None = None
    delay_s: float = 0.0
    corrupt: bool = False


ANSWER = Behaviour()


def parse_fault(data: Mapping[str, object], *, where: str) -> Fault:
    """A fault from a site-file table or a control command; clear errors for bad input."""
    allowed = {"kind", "code", "delay_s", "after_s", "duration_s", "meter"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}", reason="bad_fault")
    kind_text = data.get("kind")
    try:
        kind = FaultKind(str(kind_text))
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ConfigError(
            f"{where}: unknown fault kind {kind_text!r} (known: {known})", reason="bad_fault"
        ) from None

    def number(key: str, default: float | None) -> float | None:
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {key} must be a number", reason="bad_fault")
        return float(value)

    code = data.get("code", 0x04)
    if isinstance(code, bool) or not isinstance(code, int):
        raise ConfigError(f"{where}: code must be an integer", reason="bad_fault")
    try:
        return Fault(
            kind=kind,
            code=code,
            delay_s=number("delay_s", 2.0) or 0.0,
            after_s=number("after_s", 0.0) or 0.0,
            duration_s=number("duration_s", None),
        )
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}", reason=error.reason) from None


@dataclass
class FaultPlan:
    """One meter's faults: scheduled windows (simulated time) and a run-time override."""

    start: float
    """Simulated time the schedule counts from."""
    scheduled: list[Fault] = field(default_factory=list)
    runtime: Fault | None = None
    runtime_since: float = 0.0
    _resets_done: int = 0
    _pending_runtime_reset: float | None = None

    def switch(self, fault: Fault | None, *, now: float) -> None:
        """Switch the run-time fault on (replacing any) or off (``None``) at ``now``."""
        if fault is not None and fault.kind is FaultKind.RESET:
            self._pending_runtime_reset = now
            return
        self.runtime = fault
        self.runtime_since = now

    def _window(self, fault: Fault, origin: float) -> tuple[float, float]:
        begin = origin + fault.after_s
        end = math.inf if fault.duration_s is None else begin + fault.duration_s
        return begin, end

    def active(self, t: float) -> Fault | None:
        """The fault in force at ``t`` (the run-time one wins over the schedule)."""
        if self.runtime is not None:
            begin, end = self._window(self.runtime, self.runtime_since)
            if begin <= t < end:
                return self.runtime
        for fault in self.scheduled:
            if fault.kind is FaultKind.RESET:
                continue
            begin, end = self._window(fault, self.start)
            if begin <= t < end:
                return fault
        return None

    def behaviour(self, t: float, *, serial_line: bool) -> Behaviour:
        """How to treat a request at ``t``; ``bad-crc`` only acts on serial lines."""
        fault = self.active(t)
        if fault is None:
            return ANSWER
        if fault.kind is FaultKind.TIMEOUT:
            return Behaviour(silent=True)
        if fault.kind is FaultKind.EXCEPTION:
            return Behaviour(exception=fault.code)
        if fault.kind is FaultKind.SLOW:
            return Behaviour(delay_s=fault.delay_s)
        if fault.kind is FaultKind.BAD_CRC and serial_line:
            return Behaviour(corrupt=True)
        return ANSWER

    def due_resets(self, t: float) -> list[float]:
        """Times of counter resets that fell due up to ``t`` and were not yet applied."""
        times = sorted(self.start + f.after_s for f in self.scheduled if f.kind is FaultKind.RESET)
        due = [x for x in times if x <= t][self._resets_done :]
        self._resets_done += len(due)
        if self._pending_runtime_reset is not None:
            due.append(max(self._pending_runtime_reset, due[-1] if due else -math.inf))
            self._pending_runtime_reset = None
        return due
