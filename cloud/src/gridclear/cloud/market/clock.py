"""Market time, with acceleration for demos and tests.

The scheduler asks a :class:`MarketClock` what time it is. In production that is
the wall clock. For a demo or a test the market can run faster: with ``epoch0``
the simulated time at start and ``speed`` the acceleration,

    simulated now = epoch0 + (wall now - wall0) * speed

so at ``speed=60`` a 15-minute slot goes by in 15 seconds. A demo runs the meter
simulator, the edge agents and the scheduler on one simulated time: each is given
the same speed, epoch and the wall-clock instant at which it was the epoch
(:meth:`MarketClock.anchored`), so they agree whenever each started. The scheduler reads
this clock and records it in the database on every tick
(:func:`~gridclear.cloud.market.store.record_clock`); the order API judges gate
closure by that record (``market_now()`` in SQL), so API and scheduler never
disagree about whether a slot accepts orders, accelerated or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["MarketClock"]


@dataclass(frozen=True)
class MarketClock:
    """``now()`` is ``epoch0 + (wall - wall0) * speed`` (UTC, aware)."""

    speed: float = 1.0
    epoch0: datetime = field(default_factory=lambda: datetime.now(UTC))
    wall0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not 0 < self.speed <= 100_000:
            raise ValueError("speed must be above 0 and at most 100000")
        if self.epoch0.tzinfo is None:
            raise ValueError("epoch0 must be timezone-aware")

    @classmethod
    def anchored(
        cls, *, speed: float, epoch: datetime, epoch_at: datetime, wall: datetime | None = None
    ) -> MarketClock:
        """The clock that read ``epoch`` at the wall-clock instant ``epoch_at``.

        ``wall`` is the wall-clock time now (default: the system's), read once here.
        """
        if epoch_at.tzinfo is None:
            raise ValueError("epoch_at must be timezone-aware")
        now = wall if wall is not None else datetime.now(UTC)
        return cls(speed=speed, epoch0=epoch + (now - epoch_at) * speed)

    def now(self) -> datetime:
        elapsed = time.monotonic() - self.wall0
        return self.epoch0 + timedelta(seconds=elapsed * self.speed)

    def wall_seconds(self, market_seconds: float) -> float:
        """How long ``market_seconds`` of market time take on the wall clock."""
        return market_seconds / self.speed
