"""``gridclear-cloud ledger serve``: run the embedded ledger node until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_ledger_commands", "default_state_dir"]

_PROG = "gridclear-cloud ledger serve"


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/gridclear/ledger`` (``~/.local/share/gridclear/ledger`` by default)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "gridclear" / "ledger"


def add_ledger_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``ledger`` (with ``serve``) to the top-level subcommands; its actions, for more."""
    ledger = commands.add_parser(
        "ledger",
        help="the embedded Solana ledger node (development, demos, small pilots)",
        description=(
            "The embedded ledger node: LiteSVM (Solana's System, SPL Token, Associated "
            "Token Account, Memo, Address Lookup Table and Compute Budget programs) "
            "behind the subset of Solana's JSON-RPC that gridclear and wallets use, with "
            "its state kept on disk across restarts. See docs/LEDGER.md."
        ),
    )
    actions = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="serve the ledger's JSON-RPC over HTTP",
        description=(
            "Serve Solana JSON-RPC on POST / (point GRIDCLEAR_SOLANA_RPC_URL or any "
            "Solana client at it), GET /health and GET /metrics. Blocks come every "
            "--tick-ms; a blockhash stays valid for 150 blocks; everything is final at "
            "once. Transactions are committed to --state-dir before they are answered. "
            "Stop with Ctrl-C or SIGTERM."
        ),
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8899, help="TCP port, 0 for any free one (default: 8899)"
    )
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where the ledger's state lives (default: {default_state_dir()})",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="serve requestAirdrop (free SOL from a faucet): development and tests only",
    )
    serve.add_argument(
        "--tick-ms",
        type=int,
        default=400,
        help="milliseconds between blocks (default: 400, Solana's slot time)",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write the URL served as JSON once listening (for tools that start the node)",
    )
    serve.set_defaults(handler=_serve)
    return actions


def _serve(args: argparse.Namespace) -> int:
    from gridclear.cloud.ledger.node import NodeConfig, serve_node
    from gridclear.cloud.ledger.node.store import StoreError
    from gridclear.cloud.logs import configure_logging
    from gridclear.cloud.settings import ProcessSettings, SettingsError

    if args.tick_ms <= 0:
        print(f"{_PROG}: --tick-ms must be positive", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"{_PROG}: --port must be 0-65535", file=sys.stderr)
        return 2
    try:
        settings = ProcessSettings.load()
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    config = NodeConfig(
        state_dir=args.state_dir or default_state_dir(),
        host=args.host,
        port=args.port,
        tick_s=args.tick_ms / 1000,
        dev=args.dev,
        ready_file=args.ready_file,
    )
    try:
        serve_node(config)
    except StoreError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{_PROG}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
