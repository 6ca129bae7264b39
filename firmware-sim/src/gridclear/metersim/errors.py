"""The exceptions gridclear-metersim raises on purpose, one tree.

``MetersimError``: the root. ``code`` is a stable code (``unknown_model``,
``unknown_profile``, ``bad_unit``, ``bad_site_file``, ``bad_fault``,
``bad_value``, ``bad_frame``, ...) for counting and for scripts; the message
says what to fix. The control channel answers it as ``reason`` (its wire
field), and ``reason`` is also the attribute's older name.

    MetersimError
    ├── ConfigError        a meter spec, profile, site file or CLI value is invalid
    ├── ControlError       the run-time control channel refused a command
    └── FrameError         bytes from a client are not a Modbus frame (``bad_frame``)
"""

from __future__ import annotations

__all__ = ["ConfigError", "ControlError", "FrameError", "MetersimError"]


class MetersimError(Exception):
    """Base of every error gridclear-metersim raises on purpose; ``code`` is stable."""

    code: str = "metersim_error"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.code = reason

    @property
    def reason(self) -> str:
        """``code`` under its older name (and the control channel's field)."""
        return self.code


class ConfigError(MetersimError):
    """A configuration value is invalid; nothing was started."""

    code = "bad_config"


class ControlError(MetersimError):
    """A control command was refused; the running simulator is unchanged."""

    code = "bad_command"


class FrameError(MetersimError):
    """Bytes from a client are not a Modbus frame: a bad length, a bad CRC, too short."""

    code = "bad_frame"

    def __init__(self, message: str, *, reason: str = "bad_frame") -> None:
        super().__init__(message, reason=reason)
