"""Request handling: which meter on a bus answers a request, and what happens when none can.

The layer pymodbus calls the request handler, between the framer and the
meters: a decoded request (unit id, PDU) and the simulated time in, a
:class:`~gridclear.metersim.device.Reply` out, which the transport sends, delays,
corrupts or drops as its ``behaviour`` says. No framing, no timing, no I/O
apart from reporting a simulator bug on stderr.

- A **Modbus TCP gateway** (``serial_line=False``) answers for every unit id
  on its line: one with no meter gets exception 0x0B (gateway target device
  failed to respond), as a TCP to RS-485 gateway does when the line stays
  quiet.
- On an **RTU line** nobody answers a unit id with no meter, nor a broadcast
  (unit 0, which Eastron meters do not support).
- A **simulator bug** while a meter answers must not take the gateway or the
  line down: it is counted (``internal_error``) and reported on stderr; a
  gateway answers exception 0x04 (slave device failure), a line stays silent.

Each bus counts what happened on it in :attr:`Bus.counters`; the transports add
their own (connections, frames, bad frames), the meters keep theirs.
"""

from __future__ import annotations

import sys
from collections import Counter

from gridclear.metersim.device import Reply, SimulatedMeter, exception_pdu
from gridclear.metersim.faults import Behaviour
from gridclear.metersim.site import BusSpec

__all__ = ["GATEWAY_NO_RESPONSE", "SLAVE_DEVICE_FAILURE", "Bus", "handle_request"]

GATEWAY_NO_RESPONSE = 0x0B
"""Modbus exception: gateway target device failed to respond."""
SLAVE_DEVICE_FAILURE = 0x04
"""Modbus exception: an unrecoverable error while the device served the request."""

_SILENCE = Reply(b"", Behaviour(silent=True))


class Bus:
    """The meters on one line, by unit id, and the line's counters.

    ``endpoint`` says where the line is served (``host:port`` or a device
    path) once its transport has started.
    """

    def __init__(self, spec: BusSpec, *, meters: dict[int, SimulatedMeter]) -> None:
        self.spec = spec
        self.meters = meters
        self.counters: Counter[str] = Counter()
        self.endpoint = ""

    def report_internal_error(self, where: str, error: BaseException) -> None:
        """Count and report a simulator bug; the caller goes on serving."""
        self.counters["internal_error"] += 1
        print(
            f"gridclear-metersim: internal error at {where}: {error!r}", file=sys.stderr, flush=True
        )


def handle_request(bus: Bus, *, unit: int, pdu: bytes, now: float, serial_line: bool) -> Reply:
    """The reply of ``bus``'s line to a request for ``unit`` at simulated time ``now``.

    Never raises for anything a client sends; a silent reply means no answer.
    """
    meter = bus.meters.get(unit)
    function = pdu[0] if pdu else 0
    if meter is None:
        if serial_line:
            bus.counters["absent_unit" if unit else "broadcast_ignored"] += 1
            return _SILENCE
        bus.counters["absent_unit"] += 1
        return Reply(exception_pdu(function, GATEWAY_NO_RESPONSE))
    try:
        return meter.answer(pdu, now, serial_line=serial_line)
    except Exception as error:  # a simulator bug must not take the line down
        bus.report_internal_error(meter.name, error)
        if serial_line:
            return _SILENCE
        return Reply(exception_pdu(function, SLAVE_DEVICE_FAILURE))
