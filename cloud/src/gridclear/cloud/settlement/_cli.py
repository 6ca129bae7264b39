"""``gridclear-cloud ledger init|keygen|faucet|settle|reconcile``: settlement by hand.

``ledger serve`` (the embedded ledger node) lives with the node; these commands
work against any ledger at ``GRIDCLEAR_SOLANA_RPC_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gridclear.cloud import env

if TYPE_CHECKING:
    from gridclear.cloud.ledger.client import LedgerClient
    from gridclear.cloud.settings import LedgerSettings

__all__ = ["add_settlement_commands"]

_PROG = "gridclear-cloud ledger"


def add_settlement_commands(ledger: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the settlement actions to the ``ledger`` command's subcommands."""
    keygen = ledger.add_parser(
        "keygen",
        help="create a service key file (0600, Solana CLI format)",
        description=(
            "Create a new Ed25519 key file for the oracle or the settlement authority. "
            "It is written with mode 0600 and never overwritten; the public key is printed."
        ),
    )
    keygen.add_argument("path", type=Path, help="where to write the key file")
    keygen.set_defaults(handler=_keygen)

    init = ledger.add_parser(
        "init",
        help="create or adopt the mints and record them",
        description=(
            "Create the energy mint (3 decimals; the oracle is its authority) and adopt the "
            "payment mint given with --payment-mint, or create one on a development ledger; "
            f"record them in {env.DATABASE_URL}. Safe to run again. Needs "
            f"{env.SOLANA_RPC_URL}, {env.ORACLE_KEY_FILE} and {env.SETTLEMENT_KEY_FILE}."
        ),
    )
    init.add_argument(
        "--payment-mint",
        default=None,
        metavar="ADDRESS",
        help="adopt this payment token mint (e.g. USDC on mainnet) instead of creating one",
    )
    init.add_argument(
        "--airdrop",
        action="store_true",
        help="fund the settlement authority by requestAirdrop (development ledgers)",
    )
    init.set_defaults(handler=_init)

    faucet = ledger.add_parser(
        "faucet",
        help="development ledgers: give a wallet SOL and payment tokens",
        description=(
            "Mint payment tokens to a wallet (only where gridclear created the payment mint) "
            "and airdrop it SOL for fees: the demo's and the tests' money."
        ),
    )
    faucet.add_argument("--wallet", required=True, metavar="ADDRESS")
    faucet.add_argument("--amount", type=int, default=0, help="payment base units to mint")
    faucet.add_argument("--lamports", type=int, default=0, help="SOL (lamports) to airdrop")
    faucet.set_defaults(handler=_faucet)

    settle = ledger.add_parser(
        "settle",
        help="settle the slots that are settling, now",
        description=(
            "Run settlement passes until no slot is left settling (or one pass with --once). "
            "The scheduler does this on its own; this is for operators and recovery."
        ),
    )
    settle.add_argument("--once", action="store_true", help="one pass only")
    settle.set_defaults(handler=_settle)

    reconcile = ledger.add_parser(
        "reconcile",
        help="compare the ledger with the database; exit 1 on any difference",
        description=(
            "Compare mint supplies, every settlement transaction and every participant's "
            "token balances with the database's projection. Reports; never corrects."
        ),
    )
    reconcile.set_defaults(handler=_reconcile)


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


def _settings() -> LedgerSettings:
    from gridclear.cloud.settings import LedgerSettings

    settings = LedgerSettings.load()
    if settings.solana_rpc_url is None:
        from gridclear.cloud.settings import SettingsError

        raise SettingsError(f"set {env.SOLANA_RPC_URL} (the ledger's JSON-RPC endpoint)")
    return settings


def _run(main: object) -> int:
    """Run ``main()`` with the logging set up; a refusal is one line, exit 2."""
    from gridclear.cloud.errors import GridclearCloudError
    from gridclear.cloud.logs import configure_logging

    assert callable(main)
    try:
        settings = _settings()
        configure_logging(level=settings.log_level, fmt="text")
        code: int = asyncio.run(main(settings))
    except GridclearCloudError as exc:
        return _fail(str(exc))
    return code


def _keygen(args: argparse.Namespace) -> int:
    from gridclear.cloud.errors import GridclearCloudError
    from gridclear.cloud.ledger.keys import create_key_file

    try:
        key = create_key_file(args.path)
    except GridclearCloudError as exc:
        return _fail(str(exc))
    print(key.pubkey)
    return 0


def _client(settings: LedgerSettings) -> LedgerClient:
    from gridclear.cloud.ledger.client import LedgerClient

    assert settings.solana_rpc_url is not None
    return LedgerClient(settings.solana_rpc_url, commitment=settings.solana_commitment)


def _init(args: argparse.Namespace) -> int:
    async def main(settings: LedgerSettings) -> int:
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        from gridclear.cloud.ledger.keys import load_key_file
        from gridclear.cloud.settlement.setup import init_ledger

        oracle_file, authority_file = settings.key_files()
        oracle, authority = (
            load_key_file(oracle_file).keypair,
            load_key_file(authority_file).keypair,
        )
        async with (
            _client(settings) as ledger,
            await AsyncConnection.connect(
                settings.database(), autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            result = await init_ledger(
                conn,
                ledger,
                oracle=oracle,
                authority=authority,
                payment_mint=args.payment_mint,
                airdrop=args.airdrop,
            )
        setup = result.setup
        print("set up" if result.created else "already set up (nothing changed)")
        print(f"  energy mint           {setup.energy_mint} (decimals {setup.energy_decimals})")
        print(
            f"  payment mint          {setup.payment_mint} (decimals {setup.payment_decimals},"
            f" {'created here' if setup.payment_mint_created else 'adopted'})"
        )
        print(f"  oracle                {setup.oracle}")
        print(f"  settlement authority  {setup.settlement_authority}")
        return 0

    return _run(main)


def _faucet(args: argparse.Namespace) -> int:
    async def main(settings: LedgerSettings) -> int:
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row
        from solders.pubkey import Pubkey

        from gridclear.cloud.ledger.keys import load_key_file
        from gridclear.cloud.settlement import store
        from gridclear.cloud.settlement.setup import grant_payment

        try:
            wallet = Pubkey.from_string(args.wallet)
        except ValueError:
            return _fail(f"{args.wallet!r} is not a Solana address")
        async with (
            _client(settings) as ledger,
            await AsyncConnection.connect(
                settings.database(), autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            if args.lamports > 0:
                signature = await ledger.request_airdrop(wallet, args.lamports)
                await ledger.wait_landed([signature])
                print(f"airdropped {args.lamports} lamports: {signature}")
            if args.amount > 0:
                setup = await store.load_setup(conn)
                if setup is None:
                    return _fail("the ledger is not set up: run `gridclear-cloud ledger init`")
                oracle_file, authority_file = settings.key_files()
                signature = await grant_payment(
                    conn,
                    ledger,
                    setup,
                    oracle=load_key_file(oracle_file).keypair,
                    authority=load_key_file(authority_file).keypair,
                    wallet=wallet,
                    amount=args.amount,
                )
                print(f"minted {args.amount} payment base units: {signature}")
        return 0

    return _run(main)


def _settle(args: argparse.Namespace) -> int:
    async def main(settings: LedgerSettings) -> int:
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        from gridclear.cloud.ledger.keys import load_key_file
        from gridclear.cloud.settlement import store
        from gridclear.cloud.settlement.engine import FaultPoint
        from gridclear.cloud.settlement.service import SettlementService

        oracle_file, authority_file = settings.key_files()
        fault = None if settings.settlement_fault is None else FaultPoint(settings.settlement_fault)
        async with (
            _client(settings) as ledger,
            await AsyncConnection.connect(
                settings.database(), autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            service = SettlementService(
                ledger,
                load_key_file(oracle_file).keypair,
                load_key_file(authority_file).keypair,
                fault=fault,
            )
            passes = 0
            while True:
                report = await service.settle(conn)
                passes += 1
                if report is None:
                    return _fail("the ledger is not set up: run `gridclear-cloud ledger init`")
                print(
                    f"pass {passes}: {report.sent} sent, {report.landed} landed, "
                    f"{report.trades_settled} trades settled, {report.trades_failed} failed, "
                    f"slots settled: {', '.join(map(str, report.settled_slots)) or 'none'}"
                )
                if args.once or not await store.settling_slots(conn):
                    return 0
                if not (report.sent or report.landed or report.settled_slots):
                    await asyncio.sleep(0.2)  # waiting on the ledger: don't spin

    return _run(main)


def _reconcile(args: argparse.Namespace) -> int:
    async def main(settings: LedgerSettings) -> int:
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        from gridclear.cloud.settlement import store
        from gridclear.cloud.settlement.reconcile import reconcile

        async with (
            _client(settings) as ledger,
            await AsyncConnection.connect(
                settings.database(), autocommit=True, row_factory=dict_row
            ) as conn,
        ):
            setup = await store.load_setup(conn)
            if setup is None:
                return _fail("the ledger is not set up: run `gridclear-cloud ledger init`")
            report = await reconcile(conn, ledger, setup)
        if report.clean:
            print(f"clean: {report.checked} checks, no difference")
            return 0
        print(f"{len(report.differences)} differences in {report.checked} checks:")
        for d in report.differences:
            print(f"  {d.kind:16} {d.subject}  database {d.expected}  ledger {d.actual}")
        return 1

    return _run(main)
