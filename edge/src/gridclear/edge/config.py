"""The gateway's configuration: one TOML file, validated once at start-up.

Shape (every key is documented on the model fields below)::

    device_id = "gw-1"
    key_file = "/var/lib/gridclear/device.key"
    outbox = "/var/lib/gridclear/outbox.db"

    [mqtt]
    url = "mqtts://broker.example.org:8883"
    ca_file = "ca.pem"

    [[meters]]
    name = "m1"
    transport = "tcp"
    host = "192.168.1.50"
    port = 502
    unit = 1
    model = "sdm630"
    poll_interval_s = 1

    [[meters]]
    name = "pv"
    transport = "rtu"
    device = "/dev/ttyUSB0"
    baudrate = 9600
    unit = 2
    model = "sdm120"

A demo or a test may run the gateway on a simulated clock, never a gateway in
the field::

    environment = "development"      # default "production", which refuses [simulation]

    [simulation]
    speed = 60                       # simulated seconds per wall-clock second
    epoch = 2026-05-04T09:00:00Z     # simulated time at the wall-clock instant epoch_at
    epoch_at = 2026-05-04T17:12:00Z  # default: when the agent starts

Contract:

- Unknown keys are refused (a misspelt key must not silently mean "default").
- Types are strict: ``unit = "1"`` is an error, not a 1. Integers are accepted
  where seconds are expected.
- Relative paths are resolved against the folder holding the configuration file,
  so a configuration and its key can move together.
- :func:`load_config` raises :class:`ConfigError` with one message that names
  the key and the problem, such as ``meters[1].unit: must be between 1 and 247``.
  Callers print ``str(error)``; they never need the traceback.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gridclear.edge.errors import GridclearEdgeError

__all__ = [
    "DEFAULT_RTU_GAP_S",
    "BusKey",
    "Config",
    "ConfigError",
    "MeterConfig",
    "MqttConfig",
    "SimulationConfig",
    "load_config",
    "parse_config",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

DEFAULT_RTU_GAP_S = 0.02
"""Silence kept between two requests on an RS-485 bus when ``request_gap_s`` is not set.

Modbus RTU itself needs only 3.5 character times (about 4 ms at 9600 baud), but
many meters answer late or drop the next frame when the master talks again too
soon; 20 ms is what installers commonly settle on and costs little at one poll
per second.
"""


class ConfigError(GridclearEdgeError):
    """The configuration cannot be used. ``str(error)`` is the one message to show.

    ``key`` is the dotted path of the offending key (``meters[1].unit``), or
    ``None`` when the file as a whole is the problem (missing, not TOML).
    """

    code = "bad_config"

    def __init__(self, message: str, *, key: str | None = None, path: Path | None = None) -> None:
        self.key = key
        self.path = path
        self.problem = message
        text = f"{key}: {message}" if key else message
        if path is not None:
            text = f"{path}: {text}"
        super().__init__(text)


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _unit(value: int) -> int:
    if not 1 <= value <= 247:
        # 0 is broadcast (never answered) and 248-255 are reserved by the Modbus spec.
        raise ValueError("must be between 1 and 247")
    return value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


StrictInt = Annotated[int, Strict()]
Unit = Annotated[int, Strict(), AfterValidator(_unit)]
Port = Annotated[int, Strict(), AfterValidator(_port)]
Name = Annotated[str, Strict(), AfterValidator(_name)]
Seconds = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a relative path against the configuration file's folder (if known)."""
    if value is None:
        return None
    base = info.context.get("base_dir") if isinstance(info.context, Mapping) else None
    path = value.expanduser()
    if not path.is_absolute() and isinstance(base, Path):
        path = base / path
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class MqttConfig(_Model):
    """How the gateway reaches the MQTT broker."""

    url: str = Field(
        description=(
            "Broker address: mqtt://host[:port] (plain, port 1883 by default) or "
            "mqtts://host[:port] (TLS, port 8883 by default)."
        )
    )
    ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM file of the certificate authorities that may sign the broker's "
            "certificate (mqtts only; default: the system's trust store)."
        ),
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate for mutual TLS (mqtts only; needs key_file).",
    )
    key_file: Path | None = Field(
        default=None, description="PEM private key of cert_file (mqtts only; needs cert_file)."
    )
    username: str | None = Field(default=None, description="Broker user name, if required.")
    password: SecretStr | None = Field(
        default=None, description="Broker password (needs username); never logged."
    )

    keepalive_s: StrictInt = Field(
        default=30,
        ge=5,
        le=3600,
        description="Seconds between keep-alive pings; a dead link shows within 1.5 times this.",
    )
    max_inflight: StrictInt = Field(
        default=32,
        ge=1,
        le=1000,
        description=(
            "Messages sent but not yet acknowledged by the broker, at most. The gateway "
            "never hands the MQTT client more than this, so nothing queues unbounded."
        ),
    )
    drain_rate: Seconds = Field(
        default=50.0,
        gt=0,
        le=10000,
        description=(
            "Messages per second, at most, when sending the backlog kept during an "
            "outage (live readings are sent as well, outside this limit)."
        ),
    )
    drain_jitter_s: Seconds = Field(
        default=10.0,
        ge=0,
        le=3600,
        description=(
            "The backlog starts after a random pause of up to this many seconds, so "
            "that gateways reconnecting together do not all send their backlog at once."
        ),
    )
    reconnect_max_s: Seconds = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Longest pause between reconnection attempts (exponential backoff, jittered).",
    )
    topic_prefix: str = Field(
        default="",
        description=(
            "Text put in front of every topic (for a shared test or staging broker); "
            "empty in production, where the broker's ACLs expect gridclear/v1/..."
        ),
    )

    _resolve_paths = field_validator("ca_file", "cert_file", "key_file")(_resolve)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {value!r})")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"has an invalid port ({value!r})") from exc
        if not parts.hostname:
            raise ValueError(f"names no host ({value!r})")
        if port is not None and port == 0:
            raise ValueError(f"has an invalid port ({value!r})")
        return value

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (an mqtts:// url)."""
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None  # checked by the validator
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise _KeyError(key, "needs an mqtts:// url (TLS)")
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _KeyError(
                missing, "is required when the other half of the client certificate is set"
            )
        if self.password is not None and self.username is None:
            raise _KeyError("username", "is required when password is set")
        return self


BusKey = tuple[str, str, int]
"""Which meters share one physical channel: ``("rtu", device, 0)`` or ``("tcp", host, port)``."""


class MeterConfig(_Model):
    """One meter the gateway polls."""

    name: Name = Field(
        description=(
            "The meter's identity in every message the gateway sends (unique on this "
            "gateway). Using the serial number printed on the meter keeps it stable "
            "across replacements of the gateway."
        )
    )
    transport: Literal["tcp", "rtu"] = Field(
        description="tcp: Modbus TCP (host, port); rtu: Modbus RTU over a serial line (device)."
    )
    model: Literal["sdm630", "sdm120", "sunspec"] = Field(
        description=(
            "Register map: Eastron SDM630 (three-phase), Eastron SDM120 (single-phase) "
            "or any SunSpec meter (models 201, 203, 204, discovered at start)."
        )
    )
    unit: Unit = Field(default=1, description="Modbus unit (slave) id, 1 to 247.")
    host: str | None = Field(default=None, description="tcp: the meter's or gateway's address.")
    port: Port = Field(default=502, description="tcp: TCP port.")
    device: str | None = Field(
        default=None, description="rtu: serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."
    )
    baudrate: StrictInt = Field(default=9600, description="rtu: line speed, bit/s.")
    parity: Literal["N", "E", "O"] = Field(default="N", description="rtu: N, E or O.")
    stopbits: Literal[1, 2] = Field(default=1, description="rtu: 1 or 2.")
    poll_interval_s: Seconds = Field(
        default=1.0, gt=0, le=3600, description="Seconds between two samples of this meter."
    )
    timeout_s: Seconds = Field(
        default=1.0, gt=0, le=60, description="Seconds to wait for one answer before retrying."
    )
    retries: StrictInt = Field(
        default=2,
        ge=0,
        le=10,
        description=(
            "Retries of a failed request within one sample, with a doubling pause "
            "(0.1 s, 0.2 s, ...) in between; after that the sample is flagged read_error."
        ),
    )
    request_gap_s: Seconds | None = Field(
        default=None,
        ge=0,
        le=10,
        description=(
            "Silence kept on the bus between the end of one answer and the next request. "
            "It belongs to the bus: every meter on the same serial device (or the same "
            "TCP host and port) must give the same value. Default: 0.02 on rtu, 0 on tcp."
        ),
    )

    @field_validator("baudrate")
    @classmethod
    def _check_baudrate(cls, value: int) -> int:
        if not 300 <= value <= 921600:
            raise ValueError("must be between 300 and 921600")
        return value

    @model_validator(mode="after")
    def _check_transport(self) -> Self:
        if self.transport == "tcp":
            if not self.host:
                raise _KeyError("host", 'is required when transport = "tcp"')
            if self.device is not None:
                raise _KeyError("device", 'is for transport = "rtu" only')
        else:
            if not self.device:
                raise _KeyError("device", 'is required when transport = "rtu"')
            if self.host is not None:
                raise _KeyError("host", 'is for transport = "tcp" only')
        return self

    @property
    def gap_s(self) -> float:
        """The effective silence between requests on this meter's bus, seconds."""
        if self.request_gap_s is not None:
            return self.request_gap_s
        return DEFAULT_RTU_GAP_S if self.transport == "rtu" else 0.0

    @property
    def bus(self) -> BusKey:
        """The channel this meter shares with others: one owner polls each bus in turn."""
        if self.transport == "rtu":
            assert self.device is not None
            return ("rtu", self.device, 0)
        assert self.host is not None
        return ("tcp", self.host, self.port)

    @property
    def address(self) -> str:
        """Where the meter is, for people: ``tcp://host:port#unit`` or ``rtu:/dev/x#unit``."""
        if self.transport == "rtu":
            return f"rtu:{self.device}#{self.unit}"
        return f"tcp://{self.host}:{self.port}#{self.unit}"


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError("must carry a UTC offset, e.g. 2026-05-04T09:00:00Z")
    return value


class SimulationConfig(_Model):
    """A simulated clock for sample and signing times: demos and tests only.

    Simulated time is ``epoch`` at the wall-clock instant ``epoch_at`` and runs
    ``speed`` times as fast as the wall clock, so every process given the same
    three values (the meter simulator's ``--start``/``--start-at``/``--speed``, the
    market scheduler's ``--epoch``/``--epoch-at``/``--speed``) tells the same time,
    whenever each of them started.
    """

    speed: Seconds = Field(
        gt=0,
        le=100_000,
        description="Simulated seconds per wall-clock second (60: a 15-minute slot in 15 s).",
    )
    epoch: Annotated[datetime, Strict(), AfterValidator(_aware)] = Field(
        description="Simulated time at the wall-clock instant epoch_at (with a UTC offset)."
    )
    epoch_at: Annotated[datetime | None, Strict(), AfterValidator(_aware)] = Field(
        default=None,
        description=(
            "The wall-clock instant at which simulated time was epoch (default: when the "
            "agent starts). Give the same value to every process that must agree."
        ),
    )


class Config(_Model):
    """The whole gateway configuration."""

    environment: Literal["production", "development"] = Field(
        default="production",
        description=(
            "production (the default: a gateway in the field) or development (a demo or "
            "a test); only development accepts a [simulation] table."
        ),
    )

    device_id: Name = Field(
        description="This gateway's id: the {device_id} in its MQTT topics and in every message."
    )
    key_file: Path = Field(
        description="The device Ed25519 private key (made by gridclear-edge keygen, mode 0600)."
    )
    outbox: Path = Field(
        description="SQLite file holding signed messages until the broker has them."
    )
    mqtt: MqttConfig
    meters: list[MeterConfig] = Field(
        default_factory=list, description="The meters to poll ([[meters]] tables)."
    )

    outbox_max_mb: Seconds = Field(
        default=512.0,
        gt=0,
        description=(
            "Size of the outbox (MB of signed messages) at which it starts thinning the "
            "oldest unsent high-resolution samples, keeping those nearest each interval "
            "boundary; 512 MB holds weeks of one-second readings of a few meters."
        ),
    )
    batch_interval_s: Seconds = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Seconds of readings collected into one signed message.",
    )
    status_interval_s: Seconds = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Seconds between refreshes of the retained status message.",
    )
    simulation: SimulationConfig | None = Field(
        default=None,
        description=(
            "Sample and sign on a simulated clock instead of real UTC (demos and tests; "
            'refused unless environment = "development").'
        ),
    )

    _resolve_paths = field_validator("key_file", "outbox")(_resolve)

    @model_validator(mode="after")
    def _check_simulation(self) -> Self:
        # A reading is evidence for settlement: in the field its time must be real UTC.
        if self.simulation is not None and self.environment == "production":
            raise _KeyError(
                "simulation",
                "a simulated clock is for demos and tests only and is refused in production"
                ' (environment = "production" is the default); a gateway in the field stamps'
                ' its readings with real UTC. Set environment = "development" to simulate',
            )
        return self

    @model_validator(mode="after")
    def _check_meters(self) -> Self:
        seen_names: dict[str, int] = {}
        seen_units: dict[tuple[BusKey, int], int] = {}
        first_on_bus: dict[BusKey, int] = {}
        for index, meter in enumerate(self.meters):
            where = f"meters[{index}]"
            if meter.name in seen_names:
                raise _KeyError(
                    f"{where}.name",
                    f"{meter.name!r} is already used by meters[{seen_names[meter.name]}]",
                )
            seen_names[meter.name] = index
            if (meter.bus, meter.unit) in seen_units:
                other = seen_units[(meter.bus, meter.unit)]
                raise _KeyError(
                    f"{where}.unit",
                    f"unit {meter.unit} on {_bus_text(meter.bus)} is already meters[{other}]",
                )
            seen_units[(meter.bus, meter.unit)] = index
            if meter.bus not in first_on_bus:
                first_on_bus[meter.bus] = index
                continue
            first = self.meters[first_on_bus[meter.bus]]
            shared = ("baudrate", "parity", "stopbits") if meter.transport == "rtu" else ()
            for key in (*shared, "gap_s"):
                if getattr(meter, key) != getattr(first, key):
                    shown = "request_gap_s" if key == "gap_s" else key
                    raise _KeyError(
                        f"{where}.{shown}",
                        f"{getattr(meter, key)} differs from {getattr(first, key)} set by "
                        f"meters[{first_on_bus[meter.bus]}] on the same bus "
                        f"{_bus_text(meter.bus)}",
                    )
        return self


def _bus_text(bus: BusKey) -> str:
    kind, where, port = bus
    return where if kind == "rtu" else f"{where}:{port}"


class _KeyError(GridclearEdgeError, ValueError):
    """A model-level check that knows which key (relative to the model) is wrong.

    Also a ``ValueError``: pydantic reports it as the model's validation error.
    """

    code = "bad_config_key"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def load_config(path: Path | str) -> Config:
    """Read and validate the TOML configuration at ``path``.

    Raises :class:`ConfigError` (only) when the file is missing, unreadable, not
    TOML, or not a valid configuration; its message names the file, the key and
    the problem.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", path=path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML: {exc}", path=path) from None
    try:
        return parse_config(data, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=exc.key, path=path) from None


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate an already parsed configuration; relative paths resolve against ``base_dir``.

    Raises :class:`ConfigError` naming the first problem found (and how many more there are).
    """
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        key, message = _describe(errors[0])
        if len(errors) > 1:
            more = len(errors) - 1
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(message, key=key) from None


def _describe(error: Mapping[str, Any]) -> tuple[str | None, str]:
    """Turn one pydantic error into (dotted key, plain-words problem)."""
    loc: Sequence[int | str] = error["loc"]
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _KeyError):
        loc = (*loc, *_split_key(cause.key))
        return _dotted(loc), cause.message
    given = error.get("input")
    messages = {
        "missing": "is required",
        "extra_forbidden": "is not a known key (check the spelling)",
        "int_type": f"must be an integer (got {_shown(given)})",
        "float_type": f"must be a number (got {_shown(given)})",
        "string_type": f"must be a string (got {_shown(given)})",
        "list_type": f"must be a list (got {_shown(given)})",
        "model_type": f"must be a table (got {_shown(given)})",
        "model_attributes_type": f"must be a table (got {_shown(given)})",
        "finite_number": "must be a finite number",
        "path_type": f"must be a path string (got {_shown(given)})",
        "datetime_type": (
            f"must be a TOML date-time with an offset, e.g. 2026-05-04T09:00:00Z"
            f" (got {_shown(given)})"
        ),
    }
    if kind in messages:
        return _dotted(loc), messages[kind]
    if kind == "literal_error":
        return _dotted(loc), f"must be one of {ctx.get('expected')} (got {_shown(given)})"
    bounds = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return _dotted(loc), f"must be {bounds[kind]} {limit} (got {_shown(given)})"
    message: str = error["msg"]
    return _dotted(loc), message.removeprefix("Value error, ")


def _split_key(key: str) -> list[int | str]:
    parts: list[int | str] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


def _dotted(loc: Sequence[int | str]) -> str | None:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or None


def _shown(value: object) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
