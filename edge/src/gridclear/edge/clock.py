"""What time it is on the gateway, and whether its clock is synchronised.

The time is the system's UTC clock, except in a demo or a test whose
configuration gives a ``[simulation]`` table: then :func:`simulated_time` runs
faster from a chosen epoch, so that readings agree with an accelerated market
(see :class:`gridclear.edge.config.SimulationConfig`; production refuses it).

Whether the clock is synchronised is asked of the kernel, which knows.

A Raspberry Pi has no battery-backed clock: after a power cut it starts at the
time it last saved until NTP corrects it. Readings taken before that are marked,
never silently trusted. The kernel's ``adjtimex`` reports ``TIME_ERROR`` (5)
while the clock is not synchronised (whatever sets it: systemd-timesyncd, chrony,
ntpd, a GPS daemon), along with its maximum error estimate; asking it needs no
privilege and no daemon-specific interface.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from collections.abc import Callable

from gridclear.shared.protocol import ClockState

__all__ = ["ClockSource", "fixed_clock", "simulated_time", "system_clock"]

ClockSource = Callable[[], ClockState]
"""Returns the clock's state now."""

_TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> (Linux, glibc): the same layout on arm64,
    # armv7 and x86-64, since every field is an int or a long.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 11),
    ]


def _adjtimex() -> Callable[[], ClockState] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None

    def read() -> ClockState:
        timex = _Timex()  # modes = 0: read only
        state = adjtimex(ctypes.byref(timex))
        if state < 0:
            return ClockState(synced=False)
        return ClockState(synced=state != _TIME_ERROR, max_error_ms=max(timex.maxerror, 0) // 1000)

    return read


def system_clock() -> ClockSource:
    """The kernel's view of this machine's clock (unsynchronised where it cannot be asked)."""
    return _adjtimex() or fixed_clock(synced=False)


def fixed_clock(*, synced: bool) -> ClockSource:
    """A clock state that never changes: for tests and for machines without adjtimex."""
    state = ClockState(synced=synced)
    return lambda: state


def simulated_time(
    *,
    speed: float,
    epoch: float,
    epoch_at: float | None = None,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Callable[[], float]:
    """A clock of seconds since the Unix epoch: ``epoch`` at the wall-clock instant
    ``epoch_at`` (default: now), running ``speed`` times as fast as the wall clock.

    The offset from ``epoch_at`` is taken from the wall clock once, here; from then
    on the clock runs on the monotonic clock, so it never goes backwards when the
    system's clock is adjusted. Processes given the same ``epoch`` and ``epoch_at``
    agree to within their wall clocks' agreement times ``speed``.
    """
    if not speed > 0:
        raise ValueError("speed must be above 0")
    wall_now, origin = wall(), monotonic()
    start = epoch + (wall_now - (wall_now if epoch_at is None else epoch_at)) * speed

    def now() -> float:
        return start + (monotonic() - origin) * speed

    return now
