"""``ledger init`` and ``ledger faucet``: the mints, the service keys' funds, test money.

:func:`init_ledger` creates the energy mint (3 decimals, the oracle its only
authority) and either adopts the operator's payment mint (USDC on mainnet) or,
on a development ledger, creates one; then it records them (``ledger_setup``).
Running it again is safe: a database that is set up is left as it is, and one
set up on another ledger (another genesis hash) is refused.

:func:`grant_payment` mints payment tokens to a wallet, only where gridclear
created the payment mint: the demo's and the tests' money, recorded so that
reconciliation accounts for every base unit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger.client import LedgerClient
from gridclear.cloud.ledger.transactions import build_v0
from gridclear.cloud.settlement import store
from gridclear.cloud.settlement.store import LedgerSetup

__all__ = [
    "ENERGY_DECIMALS",
    "LedgerSetupError",
    "SetupResult",
    "grant_payment",
    "init_ledger",
    "submit",
]

log = logging.getLogger(__name__)

ENERGY_DECIMALS = 3
"""One energy base unit is one Wh (DESIGN §6)."""
_MIN_AUTHORITY_LAMPORTS = 1_000_000_000  # 1 SOL: fees for about 200,000 transactions
_DEV_PAYMENT_DECIMALS = 6  # like USDC


class LedgerSetupError(GridclearCloudError):
    """The ledger cannot be set up as asked; the message says what to do."""

    code = "ledger_setup"


@dataclass(frozen=True)
class SetupResult:
    setup: LedgerSetup
    created: bool
    """False when the database was set up already (nothing was done)."""


async def submit(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    instructions: list[Instruction],
    signers: list[Keypair],
    *,
    purpose: str,
    timeout_s: float = 30.0,
    with_record: Callable[[int], Awaitable[None]] | None = None,
) -> Signature:
    """Sign, record, send and wait for one transaction; raises when it fails or never lands.

    ``signers[0]`` pays the fee. ``with_record`` runs in the transaction that
    records the attempt (given the attempt's id), before anything is sent. For the
    cold paths (set-up, grants); settlement's hot path batches and pipelines
    instead (:mod:`.engine`).
    """
    blockhash, last_valid = await ledger.latest_blockhash()
    transaction = build_v0(signers[0], instructions, blockhash, signers=signers[1:])
    raw = bytes(transaction)
    signature = transaction.signatures[0]
    async with conn.transaction():
        (attempt_id,) = await store.record_attempts(
            conn,
            [
                {
                    "purpose": purpose,
                    "timeslot_id": None,
                    "signature": str(signature),
                    "raw": raw,
                    "blockhash": str(blockhash),
                    "last_valid_block_height": last_valid,
                }
            ],
        )
        if with_record is not None:
            await with_record(attempt_id)
    await ledger.send_raw(raw)
    (status,) = await ledger.wait_landed([signature], timeout_s=timeout_s)
    if status is None:
        raise LedgerSetupError(f"transaction {signature} did not land within {timeout_s:g} s")
    await conn.execute(
        "UPDATE ledger_attempts SET state = %s, error = %s, landed_slot = %s, sends = 1,"
        " resolved_at = now() WHERE id = %s",
        ("landed" if status.error is None else "failed", status.error, status.slot, attempt_id),
    )
    if status.error is not None:
        raise LedgerSetupError(f"transaction {signature} failed on the ledger: {status.error}")
    return signature


async def _create_mint(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    payer: Keypair,
    authority: Pubkey,
    decimals: int,
) -> Pubkey:
    mint = Keypair()
    rent = await ledger.minimum_rent(spl.MINT_SIZE)
    instructions = [
        spl.create_account(
            payer.pubkey(), mint.pubkey(), rent, spl.MINT_SIZE, spl.TOKEN_PROGRAM_ID
        ),
        spl.initialize_mint2(mint.pubkey(), decimals, authority),
    ]
    await submit(conn, ledger, instructions, [payer, mint], purpose="setup")
    return mint.pubkey()


async def init_ledger(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    *,
    oracle: Keypair,
    authority: Keypair,
    payment_mint: str | None = None,
    airdrop: bool = False,
) -> SetupResult:
    """Set the database up to settle on ``ledger`` (see the module docstring).

    ``payment_mint`` adopts an existing mint (its decimals are read from the
    ledger); without it a payment mint is created, its authority the oracle, which
    is for development ledgers only. ``airdrop`` funds the settlement authority
    through ``requestAirdrop`` when it holds less than 1 SOL (development ledgers).
    """
    genesis = await ledger.genesis_hash()
    existing = await store.load_setup(conn)
    if existing is not None:
        if existing.genesis_hash != genesis:
            raise LedgerSetupError(
                f"this database settles on the ledger with genesis hash "
                f"{existing.genesis_hash}, not {genesis}: point GRIDCLEAR_SOLANA_RPC_URL at "
                "that ledger, or use a new database"
            )
        if existing.oracle != str(oracle.pubkey()) or existing.settlement_authority != str(
            authority.pubkey()
        ):
            raise LedgerSetupError(
                "the key files are not the ones this database was set up with "
                f"(oracle {existing.oracle}, settlement authority "
                f"{existing.settlement_authority})"
            )
        return SetupResult(existing, created=False)

    if oracle.pubkey() == authority.pubkey():
        raise LedgerSetupError("the oracle and the settlement authority must be different keys")
    balance = await ledger.balance(authority.pubkey())
    if balance < _MIN_AUTHORITY_LAMPORTS:
        if not airdrop:
            raise LedgerSetupError(
                f"the settlement authority {authority.pubkey()} holds {balance} lamports; "
                "it pays every settlement fee: send it at least 1 SOL, then run this again"
            )
        signature = await ledger.request_airdrop(authority.pubkey(), 10 * _MIN_AUTHORITY_LAMPORTS)
        await ledger.wait_landed([signature])

    if payment_mint is None:
        payment = await _create_mint(
            conn, ledger, authority, oracle.pubkey(), _DEV_PAYMENT_DECIMALS
        )
        payment_decimals = _DEV_PAYMENT_DECIMALS
    else:
        payment = Pubkey.from_string(payment_mint)
        (data,) = await ledger.accounts([payment])
        if data is None or len(data) < spl.MINT_SIZE:
            raise LedgerSetupError(f"{payment_mint} is not a token mint on this ledger")
        payment_decimals = spl.parse_mint(data).decimals
    energy = await _create_mint(conn, ledger, authority, oracle.pubkey(), ENERGY_DECIMALS)

    setup = LedgerSetup(
        genesis_hash=genesis,
        energy_mint=str(energy),
        energy_decimals=ENERGY_DECIMALS,
        payment_mint=str(payment),
        payment_decimals=payment_decimals,
        oracle=str(oracle.pubkey()),
        settlement_authority=str(authority.pubkey()),
        payment_mint_created=payment_mint is None,
    )
    await store.save_setup(conn, setup)
    log.info(
        "ledger set up: energy mint %s, payment mint %s (%s)",
        setup.energy_mint,
        setup.payment_mint,
        "created" if setup.payment_mint_created else "adopted",
    )
    return SetupResult(setup, created=True)


async def grant_payment(
    conn: AsyncConnection[DictRow],
    ledger: LedgerClient,
    setup: LedgerSetup,
    *,
    oracle: Keypair,
    authority: Keypair,
    wallet: Pubkey,
    amount: int,
) -> Signature:
    """Mint ``amount`` payment base units to ``wallet`` (its token account made if missing)."""
    if not setup.payment_mint_created:
        raise LedgerSetupError(
            "the payment mint is not gridclear's: test money exists only on a development "
            "ledger set up without --payment-mint"
        )
    if amount <= 0:
        raise LedgerSetupError("the amount must be positive")
    mint = Pubkey.from_string(setup.payment_mint)
    account = spl.associated_token_address(wallet, mint)
    instructions = [
        spl.create_associated_token_account_idempotent(authority.pubkey(), wallet, mint),
        spl.mint_to_checked(
            mint, account, oracle.pubkey(), amount=amount, decimals=setup.payment_decimals
        ),
    ]

    async def record_grant(attempt_id: int) -> None:
        await conn.execute(
            "INSERT INTO payment_grants (wallet, amount, attempt_id) VALUES (%s, %s, %s)",
            (str(wallet), amount, attempt_id),
        )

    # The grant is recorded with its attempt: reconciliation counts it once it landed.
    return await submit(
        conn, ledger, instructions, [authority, oracle], purpose="grant", with_record=record_grant
    )
