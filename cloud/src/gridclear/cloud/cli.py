"""The ``gridclear-cloud`` command: run and operate the cloud clearing service."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from gridclear.cloud import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-cloud",
        description=(
            "gridclear cloud: verifies and stores signed meter readings, serves the REST "
            "and Socket.IO API, clears a double auction for every delivery slot and "
            "settles on Solana."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the whole system locally with throwaway servers until Ctrl-C",
        description=(
            "Start throwaway PostgreSQL, Redis and Mosquitto servers on free loopback "
            "ports (unless GRIDCLEAR_*_URL names existing ones), print what runs where, "
            "and keep running until Ctrl-C or SIGTERM, then stop everything cleanly."
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
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from gridclear.cloud.demo import run_demo

    return run_demo(run_dir=args.run_dir, broker_policy=args.broker_policy)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
