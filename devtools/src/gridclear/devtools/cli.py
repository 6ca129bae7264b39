"""The ``gridclear-dev`` command: the workshop's tools (the demo and its traders)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from gridclear.devtools import __version__
from gridclear.devtools._participants_cli import add_participants_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-dev",
        description=(
            "gridclear's development tools: run the whole system on this machine with "
            "throwaway servers, and the demo's simulated traders. Not part of any "
            "deployment."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the whole system locally with throwaway servers until Ctrl-C",
        description=(
            "Start throwaway PostgreSQL, Redis and Mosquitto servers on free loopback "
            "ports (unless GRIDCLEAR_*_URL names existing ones), then the simulated "
            "street, the cloud, one gateway per household and the traders; print what "
            "runs where, and keep running until Ctrl-C or SIGTERM, then stop everything "
            "cleanly."
        ),
    )
    demo.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="folder for the servers' data and logs (default: a fresh temporary folder)",
    )
    demo.add_argument(
        "--broker-policy",
        type=Path,
        default=None,
        help="folder of Mosquitto policy files to include (default: deploy/mosquitto/conf.d)",
    )
    demo.add_argument(
        "--site",
        type=Path,
        default=None,
        help="simulated site to serve (default: firmware-sim/examples/demo-site.toml)",
    )
    demo.set_defaults(handler=_demo)
    add_participants_command(commands)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from gridclear.devtools.demo import run_demo

    return run_demo(run_dir=args.run_dir, broker_policy=args.broker_policy, site=args.site)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
