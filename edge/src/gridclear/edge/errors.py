"""The root of every exception gridclear-edge raises on purpose.

    GridclearEdgeError            the root; ``code`` is a stable code
    ├── ConfigError               the configuration cannot be used (config.py)
    ├── EnrolError                enrolment with the cloud failed (enrol.py)
    ├── OutboxError               the outbox file cannot be used (outbox.py; a RuntimeError)
    ├── ModbusReadError           a read produced no registers; ``code`` says how (modbus)
    └── SunSpecError              the device is not a usable SunSpec meter (modbus)

Each class lives beside the code that raises it and derives from the root here,
so ``except GridclearEdgeError`` catches every refusal and nothing else. ``code``
feeds logs and counters and never changes meaning once released; ``reason`` is
the same value under its older name.
"""

from __future__ import annotations

__all__ = ["GridclearEdgeError"]


class GridclearEdgeError(Exception):
    """Base of every error gridclear-edge raises on purpose; ``code`` is stable."""

    code: str = "edge_error"

    @property
    def reason(self) -> str:
        """``code`` under its older name."""
        return self.code
