"""``gridclear-dev participants``: demo traders, one per household, over the REST API."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType

__all__ = ["add_participants_command"]

_PROG = "gridclear-dev participants"


def add_participants_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``participants`` to the top-level subcommands."""
    parser = commands.add_parser(
        "participants",
        help="demo traders: one per household, bidding or offering from its meter",
        description=(
            "For a demo: create an account per household, bind the household's meters to "
            "it (as the operator), then place one bid or offer per delivery slot sized "
            "from what the household's grid meter measures, and report the fills. Runs "
            "until Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument("--api", required=True, metavar="URL", help="the API's base URL")
    parser.add_argument(
        "--operator-login",
        required=True,
        type=Path,
        metavar="FILE",
        help='JSON {"email", "password"} of an operator or admin account',
    )
    parser.add_argument(
        "--households",
        required=True,
        type=Path,
        metavar="FILE",
        help='JSON list of {"name", "deviceId", "meters": [{"name", "role", "model"}],'
        ' "email", "password"}',
    )
    parser.add_argument(
        "--market",
        default="{}",
        metavar="JSON",
        help="market settings to apply first, e.g. '{\"openAheadS\": 3600}'",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="seconds between rounds"
    )
    parser.set_defaults(handler=_run)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from gridclear.devtools.participants import ApiRequestError, Household, run_participants

    try:
        login = json.loads(args.operator_login.read_text())
        households = [
            Household(
                name=h["name"],
                device_id=h["deviceId"],
                meters=tuple(h["meters"]),
                email=h["email"],
                password=h["password"],
                wallet_key_file=h.get("walletKeyFile"),
            )
            for h in json.loads(args.households.read_text())
        ]
        market = json.loads(args.market)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{_PROG}: bad input: {exc}", file=sys.stderr)
        return 2
    # SIGINT too, explicitly: started in the background from a script, a process
    # inherits SIGINT as ignored, and Python then raises no KeyboardInterrupt.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        run_participants(
            args.api,
            households,
            operator_email=login["email"],
            operator_password=login["password"],
            market=market,
            interval_s=args.interval,
        )
    except KeyboardInterrupt:
        return 0
    except (ApiRequestError, OSError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    return 0
