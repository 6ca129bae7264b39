"""The ``gridclear-metersim`` command: simulated Modbus smart meters."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from gridclear.metersim import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-metersim",
        description=(
            "Simulated Modbus smart meters (Eastron SDM630/SDM120, SunSpec) with real "
            "register maps and physical power profiles, over Modbus TCP and RTU."
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
