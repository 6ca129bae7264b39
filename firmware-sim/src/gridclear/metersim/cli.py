"""The ``gridclear-metersim`` command: simulated Modbus smart meters."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gridclear.metersim import __version__
from gridclear.metersim.errors import ConfigError

__all__ = ["build_parser", "control_request", "main"]

_EXAMPLES = """\
examples:
  gridclear-metersim serve --port 5020 --meter 1:sdm630:household --meter 2:sdm120:pv:4000
  gridclear-metersim serve --port 5020 --meter 1:sdm630:flat:2000 --speed 60 --seed 7
  gridclear-metersim serve --site firmware-sim/examples/site.toml --control 7020
  gridclear-metersim fault --control 7020 house-a/1 timeout --duration-s 600
  gridclear-metersim fault --control 7020 house-a/1 clear
"""


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not [HOST:]PORT") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is out of range 0..65535")
    return host or "127.0.0.1", number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridclear-metersim",
        description=(
            "Simulated Modbus smart meters (Eastron SDM630/SDM120, SunSpec) with real "
            "register maps and physical power profiles, over Modbus TCP and RTU."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Each subcommand sets `handler`, a function of the parsed arguments returning
    # the exit code.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve simulated meters until Ctrl-C or SIGTERM",
        description=(
            "Serve meters on one Modbus TCP port (--meter, repeatable) or a whole site "
            "(--site FILE: several TCP gateways and RTU lines, scheduled faults). Prints "
            "what it serves where, then runs until Ctrl-C or SIGTERM."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--site", type=Path, help="site file (TOML); see firmware-sim/examples/")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=5020, help="TCP port, 0 for any free one (default: %(default)s)"
    )
    serve.add_argument(
        "--meter",
        action="append",
        default=[],
        metavar="UNIT:MODEL:PROFILE",
        help=(
            "a meter: UNIT 1-247 (or a range 1-20), MODEL sdm630|sdm120|sunspec, PROFILE "
            "pv[:peak_w] | household[:annual_kwh] | ev[:rate_w] | battery[:rate_w] | "
            "flat:<watts>, or several joined by + (household+pv:4000)"
        ),
    )
    serve.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per wall second (default 1; 0 stops the clock)",
    )
    serve.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for profiles, serials and initial registers (default 0)",
    )
    serve.add_argument(
        "--start", default=None, help="simulated start time, ISO 8601 UTC (default: now)"
    )
    serve.add_argument(
        "--start-at",
        default=None,
        metavar="ISO8601",
        help=(
            "the wall-clock time at which simulated time was --start (default: launch);"
            " processes given the same --start, --start-at and --speed share one clock"
        ),
    )
    serve.add_argument(
        "--control",
        type=_endpoint,
        default=None,
        metavar="[HOST:]PORT",
        help="listen for run-time fault commands (loopback by default)",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write what is served where as JSON once listening",
    )
    serve.set_defaults(handler=_serve)

    fault = commands.add_parser(
        "fault",
        help="switch a fault on a running simulator's meter (or clear it)",
        description="Switch a meter's fault at run time through the simulator's --control port.",
    )
    fault.add_argument("--control", type=_endpoint, required=True, metavar="[HOST:]PORT")
    fault.add_argument("meter", help="meter name, as printed by serve (e.g. tcp/3 or house-a/1)")
    fault.add_argument(
        "kind", choices=["timeout", "exception", "slow", "reset", "bad-crc", "clear"]
    )
    fault.add_argument(
        "--code", type=int, default=4, help="exception code for 'exception' (default 4)"
    )
    fault.add_argument(
        "--delay-s",
        type=float,
        default=2.0,
        help="answer delay for 'slow', wall seconds (default 2)",
    )
    fault.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="simulated seconds the fault lasts (default: until cleared)",
    )
    fault.set_defaults(handler=_fault)

    status = commands.add_parser("status", help="print a running simulator's counters as JSON")
    status.add_argument("--control", type=_endpoint, required=True, metavar="[HOST:]PORT")
    status.set_defaults(handler=_status)
    return parser


def _error(message: str) -> int:
    print(f"gridclear-metersim: error: {message}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    from gridclear.metersim.runner import run
    from gridclear.metersim.site import load_site, parse_start, site_from_args

    try:
        if args.site is not None:
            if args.meter:
                return _error("give either --site or --meter, not both")
            site = load_site(args.site)
            overrides: dict[str, Any] = {}
            if args.speed is not None:
                overrides["speed"] = args.speed
            if args.seed is not None:
                overrides["seed"] = args.seed
            if args.start is not None:
                overrides["start"] = parse_start(args.start)
            if args.start_at is not None:
                overrides["start_at"] = parse_start(args.start_at)
            if overrides:
                from dataclasses import replace

                site = replace(site, **overrides)
        else:
            site = site_from_args(
                host=args.host,
                port=args.port,
                meters=args.meter,
                speed=1.0 if args.speed is None else args.speed,
                seed=0 if args.seed is None else args.seed,
                start=args.start,
                start_at=args.start_at,
            )
        return run(site, control=args.control, ready_file=args.ready_file)
    except ConfigError as error:
        return _error(str(error))


def control_request(
    endpoint: tuple[str, int], request: dict[str, Any], *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send one command to a running simulator's control port and return its answer."""
    with socket.create_connection(endpoint, timeout=timeout) as connection:
        connection.sendall(json.dumps(request).encode() + b"\n")
        with connection.makefile("rb") as stream:
            answer: dict[str, Any] = json.loads(stream.readline())
    return answer


def _fault(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {
        "op": "clear" if args.kind == "clear" else "fault",
        "meter": args.meter,
    }
    if args.kind != "clear":
        request.update(kind=args.kind, code=args.code, delay_s=args.delay_s)
        if args.duration_s is not None:
            request["duration_s"] = args.duration_s
    try:
        answer = control_request(args.control, request)
    except OSError as error:
        return _error(f"cannot reach the simulator at {args.control[0]}:{args.control[1]}: {error}")
    if not answer.get("ok"):
        return _error(str(answer.get("error")))
    print(json.dumps(answer))
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        answer = control_request(args.control, {"op": "status"})
    except OSError as error:
        return _error(f"cannot reach the simulator at {args.control[0]}:{args.control[1]}: {error}")
    print(json.dumps(answer, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)
