"""Settlement on Solana: DvP transactions/s built, signed and processed in LiteSVM.

Delivery versus payment as DESIGN §9 settles a trade: two ``transfer_checked``
signed by the settlement authority as delegate and a memo, in one v0 transaction,
built with gridclear's hand-made instructions (ledger.spl, ledger.transactions),
signed, and processed by LiteSVM in process (the SPL programs themselves, no
network). Three shapes: one trade a transaction; a batch of 10 trades with a
lookup table; and, as the baseline in the same run, a raw lamport transfer (one
System instruction) through the same build-sign-process path. Also the cost of
one ``transfer_checked`` built by hand against solana-py's builder.

Run with ``script/bench dvp`` (``--quick`` for a smoke run) or
``python -m bench.bench_dvp``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.system_program import TransferParams
from solders.system_program import transfer as system_transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import transfer_checked as solana_py_transfer_checked
from spl.token.models import TransferCheckedParams

from bench.harness import BenchContext, Figure
from gridclear.cloud.ledger import spl
from gridclear.cloud.ledger import transactions as tx

SOL = 1_000_000_000
PAYMENT_DECIMALS = 6
BATCH = 10


def _land(svm: LiteSVM, transaction: VersionedTransaction) -> None:
    result = svm.send_transaction(transaction)
    if isinstance(result, FailedTransactionMetadata):
        raise RuntimeError(f"{result.err()}: {result.meta().logs()}")


class _World:
    """Two mints, an authority, ``participants`` wallets approved to the maximum."""

    def __init__(self, participants: int) -> None:
        self.svm = LiteSVM()
        self.authority = Keypair()
        self.authority_key = self.authority.pubkey()
        self.svm.airdrop(self.authority_key, 1_000 * SOL)
        self.energy = self._mint(3)
        self.payment = self._mint(PAYMENT_DECIMALS)
        self.mints = tx.SettlementMints(
            energy=self.energy, payment=self.payment, payment_decimals=PAYMENT_DECIMALS
        )
        self.wallets = [Keypair() for _ in range(participants)]
        for wallet in self.wallets:
            self.svm.airdrop(wallet.pubkey(), SOL)
            self._onboard(wallet)

    def _run(self, instructions: list[Instruction], *signers: Keypair) -> None:
        _land(
            self.svm,
            tx.build_v0(self.authority, instructions, self.svm.latest_blockhash(), signers=signers),
        )

    def _mint(self, decimals: int) -> Pubkey:
        mint = Keypair()
        rent = self.svm.minimum_balance_for_rent_exemption(spl.MINT_SIZE)
        self._run(
            [
                spl.create_account(
                    self.authority_key, mint.pubkey(), rent, spl.MINT_SIZE, spl.TOKEN_PROGRAM_ID
                ),
                spl.initialize_mint2(mint.pubkey(), decimals, self.authority_key),
            ],
            mint,
        )
        return mint.pubkey()

    def _onboard(self, wallet: Keypair) -> None:
        owner = wallet.pubkey()
        instructions = []
        for mint, decimals in ((self.energy, 3), (self.payment, PAYMENT_DECIMALS)):
            account = spl.associated_token_address(owner, mint)
            instructions += [
                spl.create_associated_token_account_idempotent(self.authority_key, owner, mint),
                spl.mint_to_checked(
                    mint, account, self.authority_key, amount=10**15, decimals=decimals
                ),
                spl.approve_checked(
                    account, mint, self.authority_key, owner, amount=spl.U64_MAX, decimals=decimals
                ),
            ]
        self._run(instructions, wallet)


def _rate(count: int, function: Callable[[int], None]) -> float:
    """Calls per second of ``function(i)`` for i in range(count), after a warm-up."""
    function(0)
    started = time.perf_counter()
    for i in range(1, count + 1):
        function(i)
    return count / (time.perf_counter() - started)


def run(ctx: BenchContext) -> list[Figure]:
    count = 300 if ctx.quick else 3_000
    world = _World(2 * BATCH)
    svm, authority, mints = world.svm, world.authority, world.mints
    wallets = [wallet.pubkey() for wallet in world.wallets]
    pairs = [(wallets[2 * k], wallets[2 * k + 1]) for k in range(BATCH)]
    blockhash = svm.latest_blockhash()
    memo = b"gridclear settlement 123456 root " + b"9f" * 32

    # Baseline: a raw lamport transfer through the same build, sign and process path.
    payee = Keypair().pubkey()
    svm.airdrop(payee, SOL)  # rent-exempt from the start

    def raw_transfer(i: int) -> None:
        instruction = system_transfer(
            TransferParams(from_pubkey=world.authority_key, to_pubkey=payee, lamports=1 + i)
        )
        _land(svm, tx.build_v0(authority, [instruction], blockhash))

    # One trade, two transfers and the memo, a transaction. Amounts vary with i so
    # every transaction (and its signature) is new under the one blockhash.
    def one_dvp(i: int) -> None:
        seller, buyer = pairs[i % BATCH]
        delivery = tx.Delivery(seller, buyer, energy_wh=1 + i, payment=1_000 + i)
        _land(svm, tx.build_settlement(authority, [delivery], mints, memo, blockhash))

    def build_only(i: int) -> None:
        seller, buyer = pairs[i % BATCH]
        delivery = tx.Delivery(seller, buyer, energy_wh=1 + i, payment=1_000 + i)
        tx.build_settlement(authority, [delivery], mints, memo, blockhash)

    baseline = _rate(count, raw_transfer)
    dvp = _rate(count, one_dvp)
    built = _rate(count, build_only)

    # Ten trades a transaction with a lookup table of every token account.
    addresses = tx.lookup_table_addresses(wallets, mints)
    slot = svm.get_clock().slot + 1
    svm.warp_to_slot(slot)
    create, table = tx.create_lookup_table(world.authority_key, world.authority_key, slot - 1)
    _land(svm, tx.build_v0(authority, [create], svm.latest_blockhash()))
    for start in range(0, len(addresses), 20):  # 30 at most fit one transaction
        chunk = addresses[start : start + 20]
        extend = tx.extend_lookup_table(table, world.authority_key, world.authority_key, chunk)
        _land(svm, tx.build_v0(authority, [extend], svm.latest_blockhash()))
    svm.warp_to_slot(slot + 1)
    blockhash = svm.latest_blockhash()
    lookup = [AddressLookupTableAccount(table, addresses)]

    def batch(i: int) -> None:
        deliveries = [
            tx.Delivery(seller, buyer, energy_wh=1 + i, payment=1_000 + i)
            for seller, buyer in pairs
        ]
        _land(
            svm,
            tx.build_settlement(
                authority, deliveries, mints, memo, blockhash, lookup_tables=lookup
            ),
        )

    batches = _rate(max(count // BATCH, 10), batch)

    # One transfer_checked instruction: by hand against solana-py's builder.
    a, b, c, d = wallets[:4]
    params = TransferCheckedParams(
        program_id=TOKEN_PROGRAM_ID, source=a, mint=b, dest=c, owner=d, amount=5, decimals=3
    )
    runs = 2_000 if ctx.quick else 20_000

    def by_hand(_: int) -> None:
        spl.transfer_checked(a, b, c, d, amount=5, decimals=3)

    def with_solana_py(_: int) -> None:
        solana_py_transfer_checked(params)

    ours = statistics.median(1e6 / _rate(runs, by_hand) for _ in range(3))
    theirs = statistics.median(1e6 / _rate(runs // 10, with_solana_py) for _ in range(3))

    return [
        Figure(
            "raw_transfer_baseline", baseline, "tx/s", "one System transfer, built+signed+processed"
        ),
        Figure("dvp_one_per_tx", dvp, "tx/s", "2 transfer_checked + memo, built+signed+processed"),
        Figure("dvp_ratio_to_baseline", dvp / baseline, "x", "same run"),
        Figure("dvp_built_and_signed", built, "tx/s", "build_settlement alone, no processing"),
        Figure(
            f"dvp_batched_{BATCH}",
            batches * BATCH,
            "trades/s",
            f"{BATCH} trades + memo a v0 transaction with a lookup table; {batches:,.0f} tx/s",
        ),
        Figure("transfer_checked_by_hand", ours, "µs", "one instruction built"),
        Figure(
            "transfer_checked_solana_py",
            theirs,
            "µs",
            f"spl.token.instructions; {theirs / ours:.0f}x the hand-built one",
        ),
    ]


if __name__ == "__main__":
    from bench.harness import main

    raise SystemExit(main(["dvp"]))
