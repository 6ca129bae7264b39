"""A real Solana VM in process (LiteSVM, with the standard programs) and the steps the
ledger tests repeat on it: mints, token accounts, approvals, lookup tables.

Every step goes through gridclear's own builders (ledger.spl, ledger.transactions),
so a fixture that sets up a world also exercises them against the real programs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from gridclear.cloud.ledger import spl, transactions

SOL = 1_000_000_000


class TransactionFailedError(AssertionError):
    """A transaction the test expected to land failed; its logs are the message."""

    def __init__(self, failed: FailedTransactionMetadata) -> None:
        super().__init__(f"{failed.err()}\n" + "\n".join(failed.meta().logs()))
        self.failed = failed


@dataclass
class Chain:
    """LiteSVM with funded keys and helpers that assert every step landed."""

    svm: LiteSVM = field(default_factory=LiteSVM)

    def funded(self, lamports: int = 10 * SOL) -> Keypair:
        key = Keypair()
        self.svm.airdrop(key.pubkey(), lamports)
        return key

    def process(self, tx: VersionedTransaction) -> TransactionMetadata | FailedTransactionMetadata:
        """Send ``tx``; then expire the blockhash, so an identical later one is new."""
        result = self.svm.send_transaction(tx)
        self.svm.expire_blockhash()
        return result

    def land(self, tx: VersionedTransaction) -> TransactionMetadata:
        result = self.process(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise TransactionFailedError(result)
        return result

    def run(
        self,
        payer: Keypair,
        instructions: Sequence[Instruction],
        *,
        signers: Sequence[Keypair] = (),
        lookup_tables: Sequence[AddressLookupTableAccount] = (),
    ) -> TransactionMetadata:
        tx = transactions.build_v0(
            payer,
            instructions,
            self.svm.latest_blockhash(),
            signers=signers,
            lookup_tables=lookup_tables,
        )
        return self.land(tx)

    def create_mint(self, payer: Keypair, authority: Pubkey, decimals: int) -> Pubkey:
        mint = Keypair()
        rent = self.svm.minimum_balance_for_rent_exemption(spl.MINT_SIZE)
        self.run(
            payer,
            [
                spl.create_account(
                    payer.pubkey(), mint.pubkey(), rent, spl.MINT_SIZE, spl.TOKEN_PROGRAM_ID
                ),
                spl.initialize_mint2(mint.pubkey(), decimals, authority),
            ],
            signers=[mint],
        )
        return mint.pubkey()

    def create_token_accounts(self, payer: Keypair, owners: Sequence[Pubkey], mint: Pubkey) -> None:
        self.run(
            payer,
            [
                spl.create_associated_token_account_idempotent(payer.pubkey(), owner, mint)
                for owner in owners
            ],
        )

    def token_account(self, owner: Pubkey, mint: Pubkey) -> spl.TokenAccount:
        account = self.svm.get_account(spl.associated_token_address(owner, mint))
        assert account is not None, "no such token account"
        return spl.parse_token_account(bytes(account.data))

    def balance(self, owner: Pubkey, mint: Pubkey) -> int:
        return self.token_account(owner, mint).amount

    def mint_info(self, mint: Pubkey) -> spl.Mint:
        account = self.svm.get_account(mint)
        assert account is not None, "no such mint"
        return spl.parse_mint(bytes(account.data))

    def lookup_table(
        self, authority: Keypair, addresses: Sequence[Pubkey]
    ) -> AddressLookupTableAccount:
        """Create a table holding ``addresses`` and advance a slot so they are usable."""
        slot = self.svm.get_clock().slot
        # A table derives from a slot in the recent slot hashes: move past the
        # genesis slot so that the current one is recorded there.
        self.svm.warp_to_slot(slot + 1)
        slot += 1
        create, table = transactions.create_lookup_table(
            authority.pubkey(), authority.pubkey(), slot - 1
        )
        self.run(authority, [create])
        for start in range(0, len(addresses), 20):
            chunk = addresses[start : start + 20]
            self.run(
                authority,
                [
                    transactions.extend_lookup_table(
                        table, authority.pubkey(), authority.pubkey(), chunk
                    )
                ],
            )
        # Addresses appended in a slot are usable from the next one.
        self.svm.warp_to_slot(slot + 1)
        return AddressLookupTableAccount(table, list(addresses))


@dataclass
class Market:
    """A settlement world: two mints, an oracle, a settlement authority and wallets
    whose token accounts approve the authority as delegate up to ``cap``."""

    chain: Chain
    oracle: Keypair
    authority: Keypair
    treasurer: Keypair  # the payment mint's authority
    mints: transactions.SettlementMints
    wallets: list[Keypair]

    @classmethod
    def open(
        cls, chain: Chain, participants: int, *, funds: int, cap: int, payment_decimals: int = 6
    ) -> Market:
        oracle, authority, treasurer = chain.funded(), chain.funded(), chain.funded()
        energy = chain.create_mint(oracle, oracle.pubkey(), 3)
        payment = chain.create_mint(treasurer, treasurer.pubkey(), payment_decimals)
        mints = transactions.SettlementMints(
            energy=energy, payment=payment, payment_decimals=payment_decimals
        )
        wallets = [chain.funded(SOL) for _ in range(participants)]
        owners = [wallet.pubkey() for wallet in wallets]
        for start in range(0, len(owners), 8):
            for mint in (energy, payment):
                chain.create_token_accounts(authority, owners[start : start + 8], mint)
        for start in range(0, len(owners), 10):
            chain.run(
                treasurer,
                [
                    spl.mint_to_checked(
                        payment,
                        spl.associated_token_address(owner, payment),
                        treasurer.pubkey(),
                        amount=funds,
                        decimals=payment_decimals,
                    )
                    for owner in owners[start : start + 10]
                ],
            )
        for wallet in wallets:
            owner = wallet.pubkey()
            chain.run(
                wallet,
                [
                    spl.approve_checked(
                        spl.associated_token_address(owner, mint),
                        mint,
                        authority.pubkey(),
                        owner,
                        amount=cap,
                        decimals=decimals,
                    )
                    for mint, decimals in ((energy, 3), (payment, payment_decimals))
                ],
            )
        return cls(chain, oracle, authority, treasurer, mints, wallets)

    def mint_energy(self, owner: Pubkey, wh: int) -> None:
        self.chain.run(
            self.oracle,
            [
                spl.mint_to_checked(
                    self.mints.energy,
                    spl.associated_token_address(owner, self.mints.energy),
                    self.oracle.pubkey(),
                    amount=wh,
                    decimals=3,
                )
            ],
        )
