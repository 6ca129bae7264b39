"""The market clock: real time, accelerated, or anchored to share one simulated time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridclear.cloud.market.clock import MarketClock


def test_an_anchored_market_clock_reads_the_same_whenever_it_starts() -> None:
    epoch = datetime(2026, 12, 3, 9, tzinfo=UTC)
    epoch_at = datetime(2026, 12, 3, 18, tzinfo=UTC)
    early = MarketClock.anchored(
        speed=60, epoch=epoch, epoch_at=epoch_at, wall=epoch_at + timedelta(seconds=10)
    )
    late = MarketClock.anchored(
        speed=60, epoch=epoch, epoch_at=epoch_at, wall=epoch_at + timedelta(seconds=70)
    )
    # Ten wall seconds after the anchor the market is ten simulated minutes on, and a
    # clock started a wall minute later starts an hour of market time later.
    assert early.epoch0 == epoch + timedelta(minutes=10)
    assert late.epoch0 == early.epoch0 + timedelta(hours=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        MarketClock.anchored(speed=60, epoch=epoch, epoch_at=epoch_at.replace(tzinfo=None))
