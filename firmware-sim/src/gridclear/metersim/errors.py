"""The exceptions gridclear-metersim raises, one tree.

``MetersimError``
    ``ConfigError``: a meter spec, profile, site file or CLI value is invalid.
    ``reason`` is a stable code (``unknown_model``, ``unknown_profile``,
    ``bad_unit``, ``bad_site_file``, ``bad_fault``, ``bad_value``, ...) for
    counting and for scripts; the message says what to fix.
    ``ControlError``: the run-time control channel refused a command.
    ``FrameError``: bytes from a client are not a Modbus frame (``bad_frame``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "ControlError", "FrameError", "MetersimError"]


class MetersimError(Exception):
    """Base of every error gridclear-metersim raises on purpose."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(MetersimError):
    """A configuration value is invalid; nothing was started."""


class ControlError(MetersimError):
    """A control command was refused; the running simulator is unchanged."""


class FrameError(MetersimError):
    """Bytes from a client are not a Modbus frame: a bad length, a bad CRC, too short."""

    def __init__(self, message: str, *, reason: str = "bad_frame") -> None:
        super().__init__(message, reason=reason)
