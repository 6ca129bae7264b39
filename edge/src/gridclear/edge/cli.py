"""The ``gridclear-edge`` command: what an installer types on the gateway."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from gridclear.edge import __version__


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
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
