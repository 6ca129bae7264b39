"""``gridclear-cloud market …``: the clearing engine for auditors and what-if analysis.

Only argparse is imported here; numpy and the engine load when a command runs, so
the CLI starts fast for every other command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_market_commands"]

_PROG = "gridclear-cloud market clear"


def add_market_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``market`` command group to the top-level subcommands."""
    market = commands.add_parser(
        "market",
        help="clear an order book offline (auditing, what-if analysis)",
        description="Market tools that work on files, without the service or its database.",
    )
    market_commands = market.add_subparsers(dest="market_command", metavar="ACTION", required=True)
    clear = market_commands.add_parser(
        "clear",
        help="clear an order book given as JSON and print the result as JSON",
        description=(
            "Clear an order book with the engine the service runs and print the result "
            "(price, volume, every order's fill, the trades) as JSON. The formats are "
            "in docs/MARKET.md. A bad book gets one error line and exit code 2."
        ),
    )
    clear.add_argument(
        "--input",
        required=True,
        metavar="BOOK.json",
        help="the order book; '-' reads standard input",
    )
    clear.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="RESULT.json",
        help="write the result here instead of standard output",
    )
    clear.add_argument(
        "--price-floor",
        type=int,
        default=None,
        help="use this price floor instead of the book's (what-if)",
    )
    clear.add_argument(
        "--price-cap",
        type=int,
        default=None,
        help="use this price cap instead of the book's (what-if)",
    )
    clear.add_argument(
        "--summary",
        action="store_true",
        help="print price, volume and counts only, without the fills and trades",
    )
    clear.add_argument(
        "--compact", action="store_true", help="one line of JSON instead of indented"
    )
    clear.set_defaults(handler=run_clear)


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


def run_clear(args: argparse.Namespace) -> int:
    """Read, clear, write. Exit 0, or 2 with one line on stderr for bad input."""
    import json

    from gridclear.cloud.market.book_json import parse_book, result_to_json
    from gridclear.cloud.market.clearing import BookError, clear

    source: str = args.input
    try:
        text = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        return _fail(f"cannot read {source}: {error.strerror or error}")
    try:
        parsed = parse_book(text)
        price_floor = parsed.price_floor if args.price_floor is None else args.price_floor
        price_cap = parsed.price_cap if args.price_cap is None else args.price_cap
        result = clear(parsed.book, price_floor=price_floor, price_cap=price_cap)
    except BookError as error:
        return _fail(f"{source}: {error} [{error.reason}]")
    document = result_to_json(
        parsed.book,
        result,
        price_floor=price_floor,
        price_cap=price_cap,
        summary_only=args.summary,
    )
    rendered = json.dumps(document, indent=None if args.compact else 2) + "\n"
    if args.output is None:
        sys.stdout.write(rendered)
        sys.stdout.flush()
        return 0
    try:
        args.output.write_text(rendered, encoding="utf-8")
    except OSError as error:
        return _fail(f"cannot write {args.output}: {error.strerror or error}")
    return 0
