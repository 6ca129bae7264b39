"""The simulated clock every meter of a run reads: UTC epoch seconds at a chosen speed."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SimClock"]


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

    @classmethod
    def anchored(
        cls,
        *,
        epoch: float,
        epoch_at: float,
        speed: float,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SimClock:
        """The clock that read ``epoch`` at the wall-clock instant ``epoch_at``.

        Processes given the same three values agree on simulated time whenever each
        started (the edge agent's ``[simulation]`` table and the market scheduler's
        ``--epoch-at`` mean the same). The wall clock is read once, here.
        """
        return cls(start=epoch + (wall() - epoch_at) * speed, speed=speed, monotonic=monotonic)

    def now(self) -> float:
        """The simulated time now."""
        return self.start + (self._monotonic() - self._origin) * self.speed

    def wall_seconds(self, simulated: float) -> float:
        """Wall-clock seconds that ``simulated`` seconds take (infinite when stopped)."""
        return simulated / self.speed if self.speed else float("inf")
