"""Turning a batch of readings into the next signed message of this device. Pure.

The outbox owns the sequence number and the hash chain; the signer only builds
and signs the payload it is given the position of. Readings taken while the
clock was unsynchronised get the ``clock_unsynced`` quality flag here, so that
the flag travels with each reading even after the message is unpacked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gridclear.edge.clock import ClockSource, system_clock
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import (
    ClockState,
    ReadingsPayload,
    SignedMessage,
    sign_readings,
)
from gridclear.shared.readings import Quality, Reading
from gridclear.shared.topics import validate_device_id

__all__ = ["Signer"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Signer:
    """Signs readings as ``device_id`` with ``key``."""

    device_id: str
    key: DeviceKey
    clock: ClockSource = field(default_factory=system_clock)
    now_ms: Callable[[], int] = _now_ms

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)

    def sign(
        self,
        *,
        seq: int,
        prev: str | None,
        readings: Sequence[Reading],
        thinned: int = 0,
        clock: ClockState | None = None,
    ) -> SignedMessage:
        """The message at position ``seq`` whose predecessor's payload hashed to ``prev``.

        ``clock`` overrides the clock source (re-signing keeps the original state).
        """
        state = clock if clock is not None else self.clock()
        if not state.synced:
            readings = [_flag_unsynced(r) for r in readings]
        payload = ReadingsPayload(
            device_id=self.device_id,
            seq=seq,
            signed_ms=self.now_ms(),
            prev=prev,
            clock=state,
            thinned=thinned,
            readings=tuple(readings),
        )
        return sign_readings(payload, self.key)


def _flag_unsynced(reading: Reading) -> Reading:
    if Quality.CLOCK_UNSYNCED in reading.quality:
        return reading
    return reading.model_copy(update={"quality": reading.quality | {Quality.CLOCK_UNSYNCED}})
