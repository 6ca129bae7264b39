"""Dev-only transaction building for the ledger node's tests, with solana-py's and solders' builders.

Settlement builds its instructions by hand (``gridclear.cloud.ledger``); these tests
use the libraries' own builders on purpose, so that the node is checked against
transactions it did not help write.
"""

from __future__ import annotations

from collections.abc import Sequence

from solana.rpc.async_api import AsyncClient
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams, TransferCheckedParams

__all__ = [
    "DECIMALS",
    "MINT_SIZE",
    "Tokens",
    "lamport_transfer",
    "send",
    "sign",
]

DECIMALS = 3
MINT_SIZE = 82
SOL = 1_000_000_000


def sign(
    payer: Keypair,
    instructions: Sequence[Instruction],
    blockhash: Hash,
    signers: Sequence[Keypair] = (),
) -> VersionedTransaction:
    """A v0 transaction paid and signed by ``payer`` (and ``signers``)."""
    message = MessageV0.try_compile(payer.pubkey(), list(instructions), [], blockhash)
    return VersionedTransaction(message, [payer, *signers])


async def send(
    client: AsyncClient,
    payer: Keypair,
    instructions: Sequence[Instruction],
    signers: Sequence[Keypair] = (),
) -> Signature:
    """Sign with the latest blockhash and send (preflight on); the signature."""
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    response = await client.send_transaction(sign(payer, instructions, blockhash, signers))
    return response.value


def lamport_transfer(source: Keypair, destination: Pubkey, lamports: int) -> Instruction:
    return transfer(
        TransferParams(from_pubkey=source.pubkey(), to_pubkey=destination, lamports=lamports)
    )


class Tokens:
    """A mint with ``DECIMALS`` decimals whose authority is ``authority``, and its ATAs."""

    def __init__(self, client: AsyncClient, authority: Keypair) -> None:
        self.client = client
        self.authority = authority
        self.mint_keypair = Keypair()
        self.mint = self.mint_keypair.pubkey()

    async def create(self) -> Signature:
        rent = (await self.client.get_minimum_balance_for_rent_exemption(MINT_SIZE)).value
        return await send(
            self.client,
            self.authority,
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=self.authority.pubkey(),
                        to_pubkey=self.mint,
                        lamports=rent,
                        space=MINT_SIZE,
                        owner=TOKEN_PROGRAM_ID,
                    )
                ),
                initialize_mint2(
                    InitializeMint2Params(
                        decimals=DECIMALS,
                        program_id=TOKEN_PROGRAM_ID,
                        mint=self.mint,
                        mint_authority=self.authority.pubkey(),
                    )
                ),
            ],
            [self.mint_keypair],
        )

    def account_of(self, owner: Pubkey) -> Pubkey:
        return get_associated_token_address(owner, self.mint)

    async def open_account(self, owner: Pubkey) -> Pubkey:
        await send(
            self.client,
            self.authority,
            [create_associated_token_account(self.authority.pubkey(), owner, self.mint)],
        )
        return self.account_of(owner)

    def mint_to_instruction(self, owner: Pubkey, amount: int) -> Instruction:
        return mint_to_checked(
            MintToCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                mint=self.mint,
                dest=self.account_of(owner),
                mint_authority=self.authority.pubkey(),
                amount=amount,
                decimals=DECIMALS,
            )
        )

    async def mint_to(self, owner: Pubkey, amount: int) -> Signature:
        return await send(self.client, self.authority, [self.mint_to_instruction(owner, amount)])

    def transfer_instruction(
        self, source: Keypair, destination: Pubkey, amount: int
    ) -> Instruction:
        return transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=self.account_of(source.pubkey()),
                mint=self.mint,
                dest=self.account_of(destination),
                owner=source.pubkey(),
                amount=amount,
                decimals=DECIMALS,
            )
        )
