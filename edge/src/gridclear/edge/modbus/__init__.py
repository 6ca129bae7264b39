"""Modbus polling for the gateway: meters in, :class:`~gridclear.shared.readings.Reading` out.

Layers, each with one job:

- :mod:`._decode`: register words to values (markers, scale factors), pure.
- :mod:`._profiles`: the meter register maps (Eastron SDM630, SDM120; SunSpec
  201-204) as data, and decoding a sample's blocks into values, pure.
- :mod:`._sunspec`: SunSpec discovery (base address, model walk).
- :mod:`._transport`: one owner task per bus, a queue, a gap between requests.
- :mod:`._pool`: :class:`MeterPool`, one poller per meter, retries, backoff,
  quality flags.
- :mod:`._commands`: the ``read`` and ``scan`` subcommands.
"""

from gridclear.edge.modbus._pool import MeterPool, MeterStatus, Sink
from gridclear.edge.modbus._transport import ModbusReadError

__all__ = ["MeterPool", "MeterStatus", "ModbusReadError", "Sink"]
