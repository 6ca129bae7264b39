"""Instructions of Solana's standard programs, built by hand, and the SPL account layouts.

Pure: no I/O, no clock. Settlement uses only Solana's standard programs (DESIGN §9):
SPL Token, Associated Token Account, Memo, System, ComputeBudget and Address Lookup
Table (whose instructions live in :mod:`.transactions`). This module builds the
instructions gridclear sends to them and reads the two account layouts it needs.

Why by hand
===========

solana-py's builders validate their arguments through pydantic models and build the
data with ``construct``; on the settlement hot path (two transfers per trade) they cost
tens of microseconds an instruction, against about one built here from ``struct`` and
solders' own types. The layouts are small and fixed by the programs, so each builder
here is a few lines; a test checks every one byte for byte against solana-py's
``spl.token.instructions`` or solders' builders for the same arguments (the reference).
The one deliberate difference: :func:`memo` marks its signers read-only, as the
program's own Rust builder does, where solana-py marks its one signer writable.

Contracts
=========

- Every amount is an ``int`` (never a ``bool``) that fits a u64, every ``decimals`` a
  u8, every compute budget figure its field; anything else raises
  :class:`InstructionArgumentError` before an instruction exists, so a bad number
  never reaches a program that would wrap or truncate it.
- Token accounts are the owners' associated token accounts of the SPL Token program
  (not Token-2022): :func:`associated_token_address` derives them, memoised, because
  the derivation (a search for an address off the curve) is the slowest step of a
  transfer.
- The transfer-like instructions name their authority as the single signer: a
  delegate (the settlement authority) or the owner. Multisignature authorities are
  not used by gridclear.
- :func:`parse_token_account` and :func:`parse_mint` accept exactly the SPL Token
  layouts (165 and 82 bytes) of an initialised account and raise
  :class:`AccountDataError` for anything else.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from gridclear.cloud.errors import GridclearCloudError

__all__ = [
    "ADDRESS_LOOKUP_TABLE_PROGRAM_ID",
    "ASSOCIATED_TOKEN_PROGRAM_ID",
    "COMPUTE_BUDGET_PROGRAM_ID",
    "MEMO_PROGRAM_ID",
    "MINT_SIZE",
    "SYSTEM_PROGRAM_ID",
    "TOKEN_ACCOUNT_SIZE",
    "TOKEN_PROGRAM_ID",
    "U64_MAX",
    "AccountDataError",
    "AccountState",
    "InstructionArgumentError",
    "Mint",
    "TokenAccount",
    "approve_checked",
    "associated_token_address",
    "create_account",
    "create_associated_token_account_idempotent",
    "initialize_mint2",
    "memo",
    "mint_to_checked",
    "parse_mint",
    "parse_token_account",
    "revoke",
    "set_compute_unit_limit",
    "set_compute_unit_price",
    "transfer_checked",
]

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
COMPUTE_BUDGET_PROGRAM_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
ADDRESS_LOOKUP_TABLE_PROGRAM_ID = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")

MINT_SIZE = 82
"""Bytes of an SPL Token mint account."""
TOKEN_ACCOUNT_SIZE = 165
"""Bytes of an SPL Token account."""
U64_MAX = 2**64 - 1

_U8_MAX = 2**8 - 1
_U32_MAX = 2**32 - 1

# SPL Token instruction tags (spl-token's TokenInstruction, in declaration order).
_INITIALIZE_MINT2 = 20
_REVOKE = 5
_TRANSFER_CHECKED = 12
_APPROVE_CHECKED = 13
_MINT_TO_CHECKED = 14
# The Associated Token Account program's instruction tag for CreateIdempotent.
_ATA_CREATE_IDEMPOTENT = b"\x01"
# ComputeBudgetInstruction tags (borsh: a u8 tag, then the little-endian value).
_SET_COMPUTE_UNIT_LIMIT = 2
_SET_COMPUTE_UNIT_PRICE = 3
# SystemInstruction::CreateAccount (bincode: a u32 tag).
_SYSTEM_CREATE_ACCOUNT = 0

_AMOUNT_AND_DECIMALS = struct.Struct("<BQB")
_INIT_MINT = struct.Struct("<BB32sB32s")
_CU_LIMIT = struct.Struct("<BI")
_CU_PRICE = struct.Struct("<BQ")
_CREATE_ACCOUNT = struct.Struct("<IQQ32s")
_REVOKE_DATA = bytes([_REVOKE])
_ZERO_KEY = bytes(32)

# Read-only metas of the programs an associated token account creation names.
_SYSTEM_META = AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False)
_TOKEN_META = AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False)


class InstructionArgumentError(GridclearCloudError, ValueError):
    """An argument does not fit the instruction's field (an amount beyond u64, ...)."""

    code = "bad_instruction_argument"


class AccountDataError(GridclearCloudError, ValueError):
    """Account data is not an initialised SPL Token account or mint."""

    code = "bad_account_data"


def _uint(name: str, value: int, limit: int) -> int:
    # bool is an int subclass; True as an amount is always a mistake.
    if type(value) is not int:
        raise InstructionArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= limit:
        raise InstructionArgumentError(f"{name} {value} is outside 0..{limit}")
    return value


# ---------------------------------------------------------------- addresses


@lru_cache(maxsize=65_536)
def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` under SPL Token (memoised)."""
    address, _bump = Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    return address


# ---------------------------------------------------------------- SPL Token


def transfer_checked(
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    *,
    amount: int,
    decimals: int,
) -> Instruction:
    """Move ``amount`` base units of ``mint`` from ``source`` to ``destination``.

    ``authority`` signs: the source's owner, or its delegate within the approved cap.
    The program checks that both accounts hold ``mint`` and that it has ``decimals``.
    """
    data = _AMOUNT_AND_DECIMALS.pack(
        _TRANSFER_CHECKED,
        _uint("amount", amount, U64_MAX),
        _uint("decimals", decimals, _U8_MAX),
    )
    return Instruction(
        TOKEN_PROGRAM_ID,
        data,
        [
            AccountMeta(source, is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(destination, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


def approve_checked(
    source: Pubkey,
    mint: Pubkey,
    delegate: Pubkey,
    owner: Pubkey,
    *,
    amount: int,
    decimals: int,
) -> Instruction:
    """Let ``delegate`` move up to ``amount`` base units out of ``source``; ``owner`` signs.

    A new approval replaces the previous one (delegate and cap) rather than adding to it.
    """
    data = _AMOUNT_AND_DECIMALS.pack(
        _APPROVE_CHECKED,
        _uint("amount", amount, U64_MAX),
        _uint("decimals", decimals, _U8_MAX),
    )
    return Instruction(
        TOKEN_PROGRAM_ID,
        data,
        [
            AccountMeta(source, is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(delegate, is_signer=False, is_writable=False),
            AccountMeta(owner, is_signer=True, is_writable=False),
        ],
    )


def revoke(source: Pubkey, owner: Pubkey) -> Instruction:
    """Remove ``source``'s delegate and its remaining cap; ``owner`` signs."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        _REVOKE_DATA,
        [
            AccountMeta(source, is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=True, is_writable=False),
        ],
    )


def mint_to_checked(
    mint: Pubkey,
    destination: Pubkey,
    authority: Pubkey,
    *,
    amount: int,
    decimals: int,
) -> Instruction:
    """Create ``amount`` base units of ``mint`` in ``destination``; the mint authority signs."""
    data = _AMOUNT_AND_DECIMALS.pack(
        _MINT_TO_CHECKED,
        _uint("amount", amount, U64_MAX),
        _uint("decimals", decimals, _U8_MAX),
    )
    return Instruction(
        TOKEN_PROGRAM_ID,
        data,
        [
            AccountMeta(mint, is_signer=False, is_writable=True),
            AccountMeta(destination, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


def initialize_mint2(
    mint: Pubkey,
    decimals: int,
    mint_authority: Pubkey,
    freeze_authority: Pubkey | None = None,
) -> Instruction:
    """Initialise the (already created, :data:`MINT_SIZE`-byte) account ``mint``.

    It must be in the same transaction as the :func:`create_account` that creates it,
    or anyone could initialise it first. The absent freeze authority is written as a
    zero tag followed by 32 zero bytes, as solana-py does (the program reads the tag).
    """
    present = freeze_authority is not None
    data = _INIT_MINT.pack(
        _INITIALIZE_MINT2,
        _uint("decimals", decimals, _U8_MAX),
        bytes(mint_authority),
        int(present),
        bytes(freeze_authority) if freeze_authority is not None else _ZERO_KEY,
    )
    return Instruction(
        TOKEN_PROGRAM_ID, data, [AccountMeta(mint, is_signer=False, is_writable=True)]
    )


# ---------------------------------------------------------------- other programs


def create_associated_token_account_idempotent(
    payer: Pubkey, owner: Pubkey, mint: Pubkey
) -> Instruction:
    """Create ``owner``'s associated token account for ``mint`` unless it exists; ``payer``
    signs and pays the rent."""
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        _ATA_CREATE_IDEMPOTENT,
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(associated_token_address(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            _SYSTEM_META,
            _TOKEN_META,
        ],
    )


def memo(text: bytes, signers: Sequence[Pubkey]) -> Instruction:
    """A memo of ``text`` (UTF-8) that ``signers`` sign.

    The Memo program fails the whole transaction when a listed signer did not sign
    or the text is not UTF-8; the text is checked here so that the failure is ours.
    """
    if not isinstance(text, bytes):
        raise InstructionArgumentError(f"a memo is bytes, not {type(text).__name__}")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        raise InstructionArgumentError("a memo must be UTF-8") from None
    return Instruction(
        MEMO_PROGRAM_ID,
        text,
        [AccountMeta(signer, is_signer=True, is_writable=False) for signer in signers],
    )


def set_compute_unit_limit(units: int) -> Instruction:
    """Cap the transaction's compute units at ``units`` (u32)."""
    data = _CU_LIMIT.pack(_SET_COMPUTE_UNIT_LIMIT, _uint("units", units, _U32_MAX))
    return Instruction(COMPUTE_BUDGET_PROGRAM_ID, data, [])


def set_compute_unit_price(micro_lamports: int) -> Instruction:
    """Offer ``micro_lamports`` per compute unit as a priority fee (u64)."""
    data = _CU_PRICE.pack(_SET_COMPUTE_UNIT_PRICE, _uint("micro_lamports", micro_lamports, U64_MAX))
    return Instruction(COMPUTE_BUDGET_PROGRAM_ID, data, [])


def create_account(
    payer: Pubkey, new_account: Pubkey, lamports: int, space: int, owner: Pubkey
) -> Instruction:
    """Create ``new_account`` with ``space`` bytes owned by ``owner``, funded by ``payer``.

    Both ``payer`` and ``new_account`` sign (a mint is a fresh keypair's account).
    """
    data = _CREATE_ACCOUNT.pack(
        _SYSTEM_CREATE_ACCOUNT,
        _uint("lamports", lamports, U64_MAX),
        _uint("space", space, U64_MAX),
        bytes(owner),
    )
    return Instruction(
        SYSTEM_PROGRAM_ID,
        data,
        [
            AccountMeta(payer, is_signer=True, is_writable=True),
            AccountMeta(new_account, is_signer=True, is_writable=True),
        ],
    )


# ---------------------------------------------------------------- account layouts


class AccountState(enum.IntEnum):
    """A token account's state byte (spl-token ``AccountState``; 0 is uninitialised)."""

    INITIALIZED = 1
    FROZEN = 2


@dataclass(frozen=True, slots=True)
class TokenAccount:
    """The fields of an SPL Token account that settlement reads."""

    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None
    delegated_amount: int
    state: AccountState


@dataclass(frozen=True, slots=True)
class Mint:
    """The fields of an SPL Token mint."""

    supply: int
    decimals: int
    mint_authority: Pubkey | None
    freeze_authority: Pubkey | None


# Token account: mint, owner, amount, delegate (COption: u32 tag + key), state,
# is_native (COption<u64>), delegated_amount, close_authority (COption<Pubkey>).
_TOKEN_ACCOUNT = struct.Struct("<32s32sQI32sBI8sQI32s")
# Mint: mint_authority (COption<Pubkey>), supply, decimals, is_initialized,
# freeze_authority (COption<Pubkey>).
_MINT = struct.Struct("<I32sQBBI32s")


def _coption_key(tag: int, key: bytes, field: str) -> Pubkey | None:
    if tag == 0:
        return None
    if tag == 1:
        return Pubkey.from_bytes(key)
    raise AccountDataError(f"{field} has option tag {tag}, not 0 or 1")


def parse_token_account(data: bytes) -> TokenAccount:
    """Read an initialised SPL Token account from its :data:`TOKEN_ACCOUNT_SIZE` bytes."""
    if len(data) != TOKEN_ACCOUNT_SIZE:
        raise AccountDataError(
            f"a token account has {TOKEN_ACCOUNT_SIZE} bytes, this data has {len(data)}"
        )
    (mint, owner, amount, delegate_tag, delegate, state, native_tag, _native, delegated,
     close_tag, _close) = _TOKEN_ACCOUNT.unpack(data)  # fmt: skip
    if state not in (1, 2):
        raise AccountDataError(f"token account state {state} is not initialised or frozen")
    if native_tag not in (0, 1) or close_tag not in (0, 1):
        raise AccountDataError("is_native or close_authority has an option tag not 0 or 1")
    return TokenAccount(
        mint=Pubkey.from_bytes(mint),
        owner=Pubkey.from_bytes(owner),
        amount=amount,
        delegate=_coption_key(delegate_tag, delegate, "delegate"),
        delegated_amount=delegated,
        state=AccountState(state),
    )


def parse_mint(data: bytes) -> Mint:
    """Read an initialised SPL Token mint from its :data:`MINT_SIZE` bytes."""
    if len(data) != MINT_SIZE:
        raise AccountDataError(f"a mint has {MINT_SIZE} bytes, this data has {len(data)}")
    authority_tag, authority, supply, decimals, initialized, freeze_tag, freeze = _MINT.unpack(data)
    if initialized != 1:
        raise AccountDataError(f"the mint is not initialised (flag {initialized})")
    return Mint(
        supply=supply,
        decimals=decimals,
        mint_authority=_coption_key(authority_tag, authority, "mint_authority"),
        freeze_authority=_coption_key(freeze_tag, freeze, "freeze_authority"),
    )
