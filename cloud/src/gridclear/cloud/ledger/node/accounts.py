"""Accounts as the RPC shows them: binary encodings, and ``jsonParsed`` for SPL Token.

Pure functions over solders :class:`~solders.account.Account` values. The SPL
Token layouts are read by hand (a token account is 165 bytes, a mint 82; Token-2022
accounts start the same and carry extensions after byte 165, which are not shown).
A ``jsonParsed`` request for an account that is not a token account or a mint, or
whose mint is missing, falls back to base64 as a validator does.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import base58
from solders.account import Account
from solders.pubkey import Pubkey

from gridclear.cloud.ledger.node.codec import INVALID_PARAMS, INVALID_REQUEST, RpcError

__all__ = [
    "ACCOUNT_ENCODINGS",
    "MINT_SIZE",
    "TOKEN_2022_PROGRAM_ID",
    "TOKEN_ACCOUNT_SIZE",
    "TOKEN_PROGRAM_ID",
    "TokenAccount",
    "encode_account",
    "parse_mint_decimals",
    "parse_token_account",
    "token_amount",
]

TOKEN_PROGRAM_ID: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID: Final = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_ACCOUNT_SIZE: Final = 165
MINT_SIZE: Final = 82
_ACCOUNT_TYPE_MINT: Final = 1
_ACCOUNT_TYPE_ACCOUNT: Final = 2

ACCOUNT_ENCODINGS: Final = ("binary", "base58", "base64", "jsonParsed")
"""The encodings served (``base64+zstd`` is not: the standard library has no zstd)."""

_MAX_BASE58_BYTES: Final = 128
_STATES: Final = {1: "initialized", 2: "frozen"}

Lookup = Callable[[Pubkey], Account | None]


def _program_name(owner: Pubkey) -> str | None:
    if owner == TOKEN_PROGRAM_ID:
        return "spl-token"
    if owner == TOKEN_2022_PROGRAM_ID:
        return "spl-token-2022"
    return None


def _coption_key(data: bytes, offset: int) -> Pubkey | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return Pubkey.from_bytes(data[offset + 4 : offset + 36]) if tag == 1 else None


def _coption_u64(data: bytes, offset: int) -> int | None:
    tag, value = struct.unpack_from("<IQ", data, offset)
    return int(value) if tag == 1 else None


def _is_kind(data: bytes, size: int, account_type: int) -> bool:
    # Token-2022 puts an account-type byte at 165 when extensions follow.
    if len(data) == size:
        return True
    return len(data) > TOKEN_ACCOUNT_SIZE and data[TOKEN_ACCOUNT_SIZE] == account_type


class TokenAccount:
    """The fields of an initialised SPL token account (amounts in base units)."""

    __slots__ = (
        "amount",
        "close_authority",
        "delegate",
        "delegated_amount",
        "is_native",
        "mint",
        "owner",
        "state",
    )

    def __init__(self, data: bytes) -> None:
        self.mint = Pubkey.from_bytes(data[0:32])
        self.owner = Pubkey.from_bytes(data[32:64])
        (self.amount,) = struct.unpack_from("<Q", data, 64)
        self.delegate = _coption_key(data, 72)
        self.state = data[108]
        self.is_native = _coption_u64(data, 109)
        (self.delegated_amount,) = struct.unpack_from("<Q", data, 121)
        self.close_authority = _coption_key(data, 129)


def parse_token_account(account: Account) -> TokenAccount | None:
    """The token account in ``account``, or None when it is not an initialised one."""
    if _program_name(account.owner) is None:
        return None
    data = account.data
    if not _is_kind(data, TOKEN_ACCOUNT_SIZE, _ACCOUNT_TYPE_ACCOUNT):
        return None
    parsed = TokenAccount(data)
    return parsed if parsed.state in _STATES else None


def parse_mint_decimals(account: Account | None) -> int | None:
    """The decimals of the mint in ``account``, or None when it is not an initialised mint."""
    if account is None or _program_name(account.owner) is None:
        return None
    data = account.data
    if len(data) < MINT_SIZE or not _is_kind(data, MINT_SIZE, _ACCOUNT_TYPE_MINT):
        return None
    if data[45] != 1:
        return None
    return data[44]


def token_amount(amount: int, decimals: int) -> dict[str, Any]:
    """Solana's ``UiTokenAmount``: the exact amount as a string, and as a float and a decimal."""
    exact = Decimal(amount).scaleb(-decimals)
    text = format(exact, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": float(exact),
        "uiAmountString": text,
    }


def _parsed_token_account(parsed: TokenAccount, decimals: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "isNative": parsed.is_native is not None,
        "mint": str(parsed.mint),
        "owner": str(parsed.owner),
        "state": _STATES[parsed.state],
        "tokenAmount": token_amount(parsed.amount, decimals),
    }
    if parsed.delegate is not None:
        info["delegate"] = str(parsed.delegate)
        info["delegatedAmount"] = token_amount(parsed.delegated_amount, decimals)
    if parsed.is_native is not None:
        info["rentExemptReserve"] = token_amount(parsed.is_native, decimals)
    if parsed.close_authority is not None:
        info["closeAuthority"] = str(parsed.close_authority)
    return {"type": "account", "info": info}


def _parsed_mint(data: bytes) -> dict[str, Any]:
    mint_authority = _coption_key(data, 0)
    (supply,) = struct.unpack_from("<Q", data, 36)
    freeze_authority = _coption_key(data, 46)
    return {
        "type": "mint",
        "info": {
            "decimals": data[44],
            "freezeAuthority": None if freeze_authority is None else str(freeze_authority),
            "isInitialized": data[45] == 1,
            "mintAuthority": None if mint_authority is None else str(mint_authority),
            "supply": str(supply),
        },
    }


def _json_parsed(account: Account, lookup: Lookup) -> dict[str, Any] | None:
    program = _program_name(account.owner)
    if program is None:
        return None
    parsed_account = parse_token_account(account)
    if parsed_account is not None:
        decimals = parse_mint_decimals(lookup(parsed_account.mint))
        if decimals is None:
            return None
        parsed = _parsed_token_account(parsed_account, decimals)
    elif parse_mint_decimals(account) is not None:
        parsed = _parsed_mint(account.data)
    else:
        return None
    return {"program": program, "parsed": parsed, "space": len(account.data)}


def _data_slice(data: bytes, data_slice: dict[str, Any] | None) -> bytes:
    if data_slice is None:
        return data
    offset, length = data_slice.get("offset"), data_slice.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise RpcError(INVALID_PARAMS, "Invalid params: dataSlice needs offset and length.")
    return data[offset : offset + length]


def encode_account(
    account: Account,
    *,
    encoding: str,
    lookup: Lookup,
    data_slice: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``account`` as the RPC's ``UiAccount`` in ``encoding`` (one of :data:`ACCOUNT_ENCODINGS`).

    ``lookup`` finds the mint of a token account (for its decimals). Raises
    :class:`RpcError` for an unknown encoding, and for base58 of more than 128
    bytes (as a validator refuses).
    """
    data_field: Any
    if encoding == "jsonParsed":
        parsed = _json_parsed(account, lookup)
        data_field = (
            parsed
            if parsed is not None
            else [base64.b64encode(_data_slice(account.data, data_slice)).decode(), "base64"]
        )
    elif encoding == "base64":
        data_field = [base64.b64encode(_data_slice(account.data, data_slice)).decode(), "base64"]
    elif encoding in ("base58", "binary"):
        data = _data_slice(account.data, data_slice)
        if len(data) > _MAX_BASE58_BYTES:
            raise RpcError(
                INVALID_REQUEST,
                "Encoded binary (base 58) data should be less than 128 bytes, "
                "please use Base64 encoding.",
            )
        text = base58.b58encode(data).decode()
        data_field = text if encoding == "binary" else [text, "base58"]
    else:
        raise RpcError(
            INVALID_PARAMS,
            f"Invalid params: unsupported encoding {encoding!r}; "
            f"this node serves {', '.join(ACCOUNT_ENCODINGS)}.",
        )
    return {
        "data": data_field,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }
