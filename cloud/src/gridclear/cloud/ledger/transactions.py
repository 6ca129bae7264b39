"""Versioned (v0) transactions, address lookup tables, and delivery versus payment.

Pure: no I/O. Builds what the settlement service signs and the ledger lands
(DESIGN §9); measuring, sending and confirming are the ledger node's job.

The limits a transaction must respect, and which this module enforces
=====================================================================

- **1,232 bytes** serialised (:data:`MAX_TRANSACTION_BYTES`: an IPv6 MTU less its
  headers). Validators drop a larger transaction; LiteSVM accepts it, so a test on
  LiteSVM alone would not notice. :func:`build_v0` refuses it with
  :class:`TransactionTooLargeError` before signing.
- **64 account locks** (:data:`MAX_ACCOUNT_LOCKS`): every account a transaction
  names, whether in its static keys or loaded from a lookup table, counts.
  :func:`build_v0` refuses more with :class:`TooManyAccountLocksError`.

A lookup table shrinks each repeated account to one byte, so the limit that binds
first for settlement is the count of accounts: each trade between participants not
seen before in the transaction adds their four token accounts.

Delivery versus payment
=======================

One trade settles as two ``transfer_checked``: energy tokens from the seller's
associated token account to the buyer's, payment tokens from the buyer's to the
seller's. The **settlement authority** signs both as the delegate each participant
approved once at onboarding, pays the fee and signs the memo (the settlement id and
the slot root, DESIGN §10); the participants never sign. One transaction is atomic:
if any transfer fails (an allowance or a balance too small), nothing moves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from solders.address_lookup_table_account import (
    LOOKUP_TABLE_MAX_ADDRESSES,
    AddressLookupTableAccount,
    derive_lookup_table_address,
)
from solders.errors import SignerError
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import CompileError, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import spl

__all__ = [
    "MAX_ACCOUNT_LOCKS",
    "MAX_TRANSACTION_BYTES",
    "Delivery",
    "SettlementMints",
    "TooManyAccountLocksError",
    "TransactionBuildError",
    "TransactionTooLargeError",
    "account_locks",
    "build_settlement",
    "build_v0",
    "create_lookup_table",
    "dvp_instructions",
    "extend_lookup_table",
    "lookup_table_addresses",
    "max_deliveries",
    "serialized_size",
    "settlement_instructions",
]

MAX_TRANSACTION_BYTES = 1232
"""The most bytes a serialised transaction may have (Solana's ``PACKET_DATA_SIZE``)."""
MAX_ACCOUNT_LOCKS = 64
"""The most accounts one transaction may name (Solana's ``MAX_TX_ACCOUNT_LOCKS``)."""

# AddressLookupTable program instructions (bincode: a u32 tag, then the fields).
_CREATE_LOOKUP_TABLE = struct.Struct("<IQB")
_EXTEND_LOOKUP_TABLE = struct.Struct("<IQ")
_CREATE_TAG = 0
_EXTEND_TAG = 2
_SYSTEM_META = AccountMeta(spl.SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False)


class TransactionBuildError(GridclearCloudError):
    """A transaction cannot be built from these instructions and signers."""

    code = "transaction_unbuildable"


class TransactionTooLargeError(TransactionBuildError):
    """The signed transaction would exceed :data:`MAX_TRANSACTION_BYTES`."""

    code = "transaction_too_large"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the transaction would have {size} bytes; the limit is {MAX_TRANSACTION_BYTES}"
        )
        self.size = size
        self.limit = MAX_TRANSACTION_BYTES


class TooManyAccountLocksError(TransactionBuildError):
    """The transaction would name more than :data:`MAX_ACCOUNT_LOCKS` accounts."""

    code = "too_many_account_locks"

    def __init__(self, accounts: int) -> None:
        super().__init__(
            f"the transaction would lock {accounts} accounts; the limit is {MAX_ACCOUNT_LOCKS}"
        )
        self.accounts = accounts
        self.limit = MAX_ACCOUNT_LOCKS


# ---------------------------------------------------------------- v0 transactions


def serialized_size(message: MessageV0) -> int:
    """Bytes of the transaction that signs ``message``, without signing it.

    The signature count (a compact-u16, one byte below 128), 64 bytes a signature,
    the version prefix byte, then the message.
    """
    return 2 + 64 * message.header.num_required_signatures + len(bytes(message))


def account_locks(message: MessageV0) -> int:
    """How many accounts ``message`` names: static keys plus those its lookups load."""
    loaded = sum(
        len(lookup.writable_indexes) + len(lookup.readonly_indexes)
        for lookup in message.address_table_lookups
    )
    return len(message.account_keys) + loaded


def _compile(
    payer: Pubkey,
    instructions: Sequence[Instruction],
    recent_blockhash: Hash,
    lookup_tables: Sequence[AddressLookupTableAccount],
) -> MessageV0:
    try:
        message = MessageV0.try_compile(payer, instructions, lookup_tables, recent_blockhash)
    except CompileError as exc:
        raise TransactionBuildError(f"the message does not compile: {exc}") from None
    locks = account_locks(message)
    if locks > MAX_ACCOUNT_LOCKS:
        raise TooManyAccountLocksError(locks)
    size = serialized_size(message)
    if size > MAX_TRANSACTION_BYTES:
        raise TransactionTooLargeError(size)
    return message


def build_v0(
    payer: Keypair,
    instructions: Sequence[Instruction],
    recent_blockhash: Hash,
    *,
    lookup_tables: Sequence[AddressLookupTableAccount] = (),
    signers: Sequence[Keypair] = (),
) -> VersionedTransaction:
    """A signed v0 transaction: ``payer`` pays the fee and signs first.

    ``signers`` are the other keypairs the instructions need, in any order.
    ``lookup_tables`` are the tables (with their current addresses) the message may
    load accounts from; an address already in the static keys (a signer, a program)
    stays there. Raises :class:`TooManyAccountLocksError` or
    :class:`TransactionTooLargeError` before signing anything, and
    :class:`TransactionBuildError` when a signer is missing or the message does not
    compile.
    """
    message = _compile(payer.pubkey(), instructions, recent_blockhash, lookup_tables)
    try:
        return VersionedTransaction(message, [payer, *signers])
    except SignerError as exc:
        raise TransactionBuildError(f"the transaction cannot be signed: {exc}") from None


# ---------------------------------------------------------------- lookup tables


def create_lookup_table(
    authority: Pubkey, payer: Pubkey, recent_slot: int
) -> tuple[Instruction, Pubkey]:
    """The instruction that creates a lookup table, and the table's address.

    ``recent_slot`` must be a slot in the cluster's recent slot hashes (the current
    one will do); the address derives from ``authority`` and it. ``payer`` signs and
    pays the rent; ``authority`` need not sign to create, only to extend.
    """
    if type(recent_slot) is not int or not 0 <= recent_slot <= spl.U64_MAX:
        raise spl.InstructionArgumentError(f"recent_slot {recent_slot!r} is not a u64")
    table, bump = derive_lookup_table_address(authority, recent_slot)
    data = _CREATE_LOOKUP_TABLE.pack(_CREATE_TAG, recent_slot, bump)
    instruction = Instruction(
        spl.ADDRESS_LOOKUP_TABLE_PROGRAM_ID,
        data,
        [
            AccountMeta(table, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=False, is_writable=False),
            AccountMeta(payer, is_signer=True, is_writable=True),
            _SYSTEM_META,
        ],
    )
    return instruction, table


def extend_lookup_table(
    table: Pubkey, authority: Pubkey, payer: Pubkey, addresses: Sequence[Pubkey]
) -> Instruction:
    """Append ``addresses`` to ``table``; ``authority`` signs and ``payer`` pays the rent.

    Addresses appended become usable from the next slot on. At most 30 fit in one
    transaction that the authority pays for (fewer with a separate payer);
    :func:`build_v0` refuses more.
    """
    if not 0 < len(addresses) <= LOOKUP_TABLE_MAX_ADDRESSES:
        raise spl.InstructionArgumentError(
            f"a lookup table extension takes 1..{LOOKUP_TABLE_MAX_ADDRESSES} addresses, "
            f"not {len(addresses)}"
        )
    data = _EXTEND_LOOKUP_TABLE.pack(_EXTEND_TAG, len(addresses)) + b"".join(
        bytes(address) for address in addresses
    )
    return Instruction(
        spl.ADDRESS_LOOKUP_TABLE_PROGRAM_ID,
        data,
        [
            AccountMeta(table, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
            AccountMeta(payer, is_signer=True, is_writable=True),
            _SYSTEM_META,
        ],
    )


# ---------------------------------------------------------------- delivery versus payment


@dataclass(frozen=True, slots=True)
class SettlementMints:
    """The two tokens of settlement: energy (one base unit a Wh) and payment."""

    energy: Pubkey
    payment: Pubkey
    payment_decimals: int
    energy_decimals: int = 3


@dataclass(frozen=True, slots=True)
class Delivery:
    """One trade's settlement: ``energy_wh`` seller → buyer, ``payment`` buyer → seller.

    ``seller`` and ``buyer`` are wallets; the transfers use their associated token
    accounts. ``payment`` is in base units of the payment token.
    """

    seller: Pubkey
    buyer: Pubkey
    energy_wh: int
    payment: int


def dvp_instructions(
    delivery: Delivery, mints: SettlementMints, authority: Pubkey
) -> list[Instruction]:
    """The transfers of one trade, both signed by ``authority`` as delegate.

    A leg of zero (no energy delivered, or a payment that rounds to nothing) is
    left out rather than sent as a transfer of nothing; a delivery of nothing at
    all gives no instruction.
    """
    instructions = []
    if delivery.energy_wh:
        instructions.append(
            spl.transfer_checked(
                spl.associated_token_address(delivery.seller, mints.energy),
                mints.energy,
                spl.associated_token_address(delivery.buyer, mints.energy),
                authority,
                amount=delivery.energy_wh,
                decimals=mints.energy_decimals,
            )
        )
    if delivery.payment:
        instructions.append(
            spl.transfer_checked(
                spl.associated_token_address(delivery.buyer, mints.payment),
                mints.payment,
                spl.associated_token_address(delivery.seller, mints.payment),
                authority,
                amount=delivery.payment,
                decimals=mints.payment_decimals,
            )
        )
    return instructions


def settlement_instructions(
    deliveries: Iterable[Delivery],
    mints: SettlementMints,
    authority: Pubkey,
    memo_text: bytes,
    *,
    compute_unit_limit: int | None = None,
    compute_unit_price: int | None = None,
) -> list[Instruction]:
    """The compute budget (when given), every delivery's transfers, then one memo.

    ``authority`` signs the memo, so the memo proves who settled.
    """
    instructions = []
    if compute_unit_limit is not None:
        instructions.append(spl.set_compute_unit_limit(compute_unit_limit))
    if compute_unit_price is not None:
        instructions.append(spl.set_compute_unit_price(compute_unit_price))
    for delivery in deliveries:
        instructions.extend(dvp_instructions(delivery, mints, authority))
    instructions.append(spl.memo(memo_text, [authority]))
    return instructions


def lookup_table_addresses(wallets: Iterable[Pubkey], mints: SettlementMints) -> list[Pubkey]:
    """What a settlement lookup table holds: both mints, then each wallet's two token
    accounts (energy, payment), each address once, in first-seen order.

    Signers and invoked programs must stay in a message's static keys, so the
    authority and the programs are not listed.
    """
    addresses = [mints.energy, mints.payment]
    seen = set(addresses)
    for wallet in wallets:
        for mint in (mints.energy, mints.payment):
            address = spl.associated_token_address(wallet, mint)
            if address not in seen:
                seen.add(address)
                addresses.append(address)
    return addresses


def build_settlement(
    authority: Keypair,
    deliveries: Sequence[Delivery],
    mints: SettlementMints,
    memo_text: bytes,
    recent_blockhash: Hash,
    *,
    lookup_tables: Sequence[AddressLookupTableAccount] = (),
    compute_unit_limit: int | None = None,
    compute_unit_price: int | None = None,
) -> VersionedTransaction:
    """One atomic v0 transaction settling ``deliveries`` with one memo.

    ``authority`` (the settlement authority) pays the fee, signs the transfers as
    delegate and signs the memo. Raises what :func:`build_v0` raises when the batch
    is too large: :func:`max_deliveries` says how many fit.
    """
    instructions = settlement_instructions(
        deliveries,
        mints,
        authority.pubkey(),
        memo_text,
        compute_unit_limit=compute_unit_limit,
        compute_unit_price=compute_unit_price,
    )
    return build_v0(authority, instructions, recent_blockhash, lookup_tables=lookup_tables)


def max_deliveries(
    authority: Pubkey,
    deliveries: Sequence[Delivery],
    mints: SettlementMints,
    memo_text: bytes,
    *,
    lookup_tables: Sequence[AddressLookupTableAccount] = (),
    compute_unit_limit: int | None = None,
    compute_unit_price: int | None = None,
) -> int:
    """How many of ``deliveries``, taken from the front, fit one settlement transaction.

    Compiles without signing and checks the byte and account limits, as
    :func:`build_settlement` would with the same arguments. Adding a delivery never
    makes a transaction smaller, so the answer is found by bisection. 0 means not
    even the first fits (or ``deliveries`` is empty).
    """

    def fits(count: int) -> bool:
        instructions = settlement_instructions(
            deliveries[:count],
            mints,
            authority,
            memo_text,
            compute_unit_limit=compute_unit_limit,
            compute_unit_price=compute_unit_price,
        )
        try:
            _compile(authority, instructions, Hash.default(), lookup_tables)
        except TransactionBuildError:
            return False
        return True

    low, high = 0, len(deliveries)  # fits(low) is taken as true; find the largest
    if not fits(0):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
