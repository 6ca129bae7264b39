"""The ``gridclear-edge`` command: what an installer types on the gateway."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from gridclear.edge import __version__
from gridclear.edge.enrol import add_enrol_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-edge",
        description=(
            "gridclear edge gateway: reads Modbus smart meters (RTU and TCP), signs each "
            "batch of readings with the device's Ed25519 key, keeps it in a durable "
            "outbox and publishes it over MQTT."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Each subcommand sets `handler`, a function of the parsed arguments returning
    # the exit code.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_modbus_commands(commands)
    _add_agent_commands(commands)
    add_enrol_command(commands)
    return parser


def _add_agent_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keygen``, ``run`` and ``status``: the device key, the agent itself, its health."""
    keygen = commands.add_parser(
        "keygen",
        help="create the device's Ed25519 key file (0600) and print its public key",
        description=(
            "Generate the gateway's Ed25519 private key into a new file readable only by "
            "its owner, and print JSON with the key id (kid) and the base64url public "
            "key for enrolment. An existing key file is never replaced; --public prints "
            "its public key instead."
        ),
    )
    keygen.add_argument("--key", required=True, help="path of the private key file")
    keygen.add_argument(
        "--public", action="store_true", help="print the public key of an existing key file"
    )
    keygen.set_defaults(handler=_keygen)

    run = commands.add_parser(
        "run",
        help="poll the meters, sign, keep and publish until SIGTERM",
        description=(
            "Run the gateway agent: poll every meter, sign each batch into the outbox, "
            "publish over MQTT. Logs are JSON lines on stderr. SIGTERM or Ctrl-C stops "
            "polling, commits the last readings and sends what the broker will take "
            "before exiting. Exit code 2 when the configuration, key or outbox is unusable."
        ),
    )
    run.add_argument("--config", required=True, help="the gateway's TOML configuration")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    run.set_defaults(handler=_run)

    status = commands.add_parser(
        "status",
        help="outbox depth, oldest unsent reading, last publish, per-meter errors",
        description=(
            "Show the agent's state from its outbox: messages waiting and since when, "
            "the last acknowledged publication, broker connection and per-meter errors "
            "as of the agent's last update (every 5 s while it runs). Safe while the "
            "agent runs."
        ),
    )
    status.add_argument("--config", required=True, help="the gateway's TOML configuration")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_status)


def _keygen(args: argparse.Namespace) -> int:
    from gridclear.edge._commands import keygen_command

    return keygen_command(args)


def _run(args: argparse.Namespace) -> int:
    from gridclear.edge._logging import configure_logging
    from gridclear.edge.agent import run_agent

    configure_logging(args.log_level)
    return run_agent(Path(args.config))


def _status(args: argparse.Namespace) -> int:
    from gridclear.edge._commands import status_command

    return status_command(args)


def _add_modbus_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``read`` and ``scan``: the installer's first checks of the meters."""
    read = commands.add_parser(
        "read",
        help="read every configured meter once and print a table (the installer's first check)",
        description=(
            "Read every meter in the configuration once, concurrently, and print one line "
            "per meter: energy registers, power, voltages, currents, frequency and any "
            "error. Exit code 0 when every meter read cleanly, 1 otherwise."
        ),
    )
    read.add_argument("--config", required=True, help="the gateway's TOML configuration")
    read.add_argument(
        "--meter", action="append", metavar="NAME", help="read only this meter (repeatable)"
    )
    read.add_argument("--json", action="store_true", help="print JSON instead of a table")
    read.set_defaults(handler=_read)

    scan = commands.add_parser(
        "scan",
        help="probe Modbus unit ids on a bus and say what answers (SunSpec discovered)",
        description=(
            "Probe unit ids (1-247 by default) on every bus the configuration uses, or on "
            "the one bus given by --host or --device, and list who answers: SunSpec "
            "devices with their models and serial numbers, Eastron meters with their "
            "serial numbers. Exit code 0 when something answered, 1 when nothing did."
        ),
    )
    scan.add_argument("--config", help="scan the buses of the meters in this configuration")
    scan.add_argument("--host", help="scan this Modbus TCP host instead")
    scan.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    scan.add_argument("--device", help="scan this serial device (Modbus RTU) instead")
    scan.add_argument("--baudrate", type=int, default=9600, help="RTU line speed (default 9600)")
    scan.add_argument("--parity", choices=("N", "E", "O"), default="N", help="RTU parity")
    scan.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="RTU stop bits")
    scan.add_argument("--gap", type=float, default=None, help="seconds of silence between requests")
    scan.add_argument("--units", default="1-247", help="unit ids to probe, e.g. 1-10,20")
    scan.add_argument(
        "--timeout", type=float, default=0.3, help="seconds to wait for each unit (default 0.3)"
    )
    scan.add_argument("--json", action="store_true", help="print JSON instead of text")
    scan.set_defaults(handler=_scan)


def _read(args: argparse.Namespace) -> int:
    from gridclear.edge.modbus._commands import read_command

    return read_command(args)


def _scan(args: argparse.Namespace) -> int:
    from gridclear.edge.modbus._commands import scan_command

    return scan_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
