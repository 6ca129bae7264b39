"""Pure encoding rules of Solana's JSON-RPC: transactions in, errors and accounts out.

Everything here is a function of its arguments; the node's I/O lives elsewhere.

- :func:`decode_transaction` applies a validator's checks to a ``sendTransaction``
  or ``simulateTransaction`` argument, in its order: the encoding's own size limit
  on the text, the encoding, the 1,232-byte limit on the raw bytes (LiteSVM does not
  enforce it), then deserialisation. Each refusal is an :class:`RpcError` with
  ``-32602``, as a validator answers.
- :func:`error_json` turns a solders transaction error into the JSON a validator
  writes (rendered by solders itself, so solana-py parses it back), and
  :func:`error_message` into the text of its ``Display`` (the preflight message).
- :func:`landed` says whether a failed transaction still lands (fee charged, status
  recorded) or is dropped, as a validator decides.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

import base58
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorType

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BASE58_SIZE",
    "MAX_BASE64_SIZE",
    "METHOD_NOT_FOUND",
    "PACKET_DATA_SIZE",
    "PARSE_ERROR",
    "SEND_TRANSACTION_PREFLIGHT_FAILURE",
    "SIGNATURE_VERIFICATION_FAILURE",
    "RpcError",
    "decode_transaction",
    "error_json",
    "error_message",
    "landed",
    "simulation_json",
]

PACKET_DATA_SIZE: Final = 1232
"""The largest serialized transaction a validator accepts (1280 - 40 - 8 bytes)."""
MAX_BASE58_SIZE: Final = 1683
"""A validator's limit on the base58 text of a transaction (that of 1,232 bytes)."""
MAX_BASE64_SIZE: Final = 1644
"""A validator's limit on the base64 text of a transaction (that of 1,232 bytes)."""

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SEND_TRANSACTION_PREFLIGHT_FAILURE: Final = -32002
SIGNATURE_VERIFICATION_FAILURE: Final = -32003

_TYPE_NAME: Final = "solana_transaction::versioned::VersionedTransaction"


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data``, as Solana writes them."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of the answer."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def decode_transaction(encoded: object, encoding: str) -> tuple[VersionedTransaction, bytes]:
    """The transaction and its raw bytes, or :class:`RpcError` (``-32602``) as a validator refuses.

    ``encoding`` is ``base64`` or ``base58`` (the default of the RPC, and its
    legacy name ``binary``).
    """
    if not isinstance(encoded, str):
        raise RpcError(INVALID_PARAMS, "Invalid params: invalid type: expected a string.")
    if encoding in ("base58", "binary"):
        if len(encoded) > MAX_BASE58_SIZE:
            raise RpcError(
                INVALID_PARAMS,
                f"base58 encoded {_TYPE_NAME} too large: {len(encoded)} bytes "
                f"(max: encoded/raw {MAX_BASE58_SIZE}/{PACKET_DATA_SIZE})",
            )
        try:
            raw = base58.b58decode(encoded)
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid base58 encoding: {exc}") from None
    elif encoding == "base64":
        if len(encoded) > MAX_BASE64_SIZE:
            raise RpcError(
                INVALID_PARAMS,
                f"base64 encoded {_TYPE_NAME} too large: {len(encoded)} bytes "
                f"(max: encoded/raw {MAX_BASE64_SIZE}/{PACKET_DATA_SIZE})",
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RpcError(INVALID_PARAMS, f"invalid base64 encoding: {exc}") from None
    else:
        raise RpcError(
            INVALID_PARAMS,
            f"unsupported encoding: {encoding}. Supported encodings: base58, base64",
        )
    if len(raw) > PACKET_DATA_SIZE:
        raise RpcError(
            INVALID_PARAMS,
            f"decoded {_TYPE_NAME} too large: {len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)",
        )
    try:
        transaction = VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # solders raises its own error types for bad bytes
        raise RpcError(INVALID_PARAMS, f"failed to deserialize {_TYPE_NAME}: {exc}") from None
    return transaction, raw


def error_json(error: TransactionErrorType) -> Any:
    """The JSON a validator writes for ``error`` (``"BlockhashNotFound"``, ``{"InstructionError": …}``)."""
    # solders renders the error inside a simulation result exactly as the RPC does.
    return json.loads(RpcSimulateTransactionResult(err=error).to_json())["err"]


def simulation_json(
    error: TransactionErrorType | None, *, logs: list[str], units: int
) -> dict[str, Any]:
    """A simulation result as the RPC writes it (the ``data`` of a preflight failure)."""
    result = RpcSimulateTransactionResult(err=error, logs=logs, units_consumed=units)
    data: dict[str, Any] = json.loads(result.to_json())
    return data


_TRANSACTION_MESSAGES: Final[dict[str, str]] = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "InvalidAddressLookupTableOwner": (
        "Transaction loads an address table account with an invalid owner"
    ),
    "InvalidAddressLookupTableData": (
        "Transaction loads an address table account with invalid data"
    ),
    "InvalidAddressLookupTableIndex": "Transaction address table lookup uses an invalid index",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "UnsupportedVersion": "Transaction version is unsupported",
}

_INSTRUCTION_MESSAGES: Final[dict[str, str]] = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "InvalidAccountOwner": "Invalid account owner",
    "ArithmeticOverflow": "Program arithmetic overflowed",
    "IllegalOwner": "Provided owner is not allowed",
}


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _instruction_message(error: Any) -> str:
    if isinstance(error, dict) and "Custom" in error:
        return f"custom program error: {int(error['Custom']):#x}"
    if isinstance(error, dict) and "BorshIoError" in error:
        return f"Failed to serialize or deserialize account data: {error['BorshIoError']}"
    if isinstance(error, str):
        return _INSTRUCTION_MESSAGES.get(error, _words(error))
    return str(error)


def error_message(error: Any) -> str:
    """The text of a transaction error's ``Display``, from its JSON (:func:`error_json`)."""
    if isinstance(error, str):
        return _TRANSACTION_MESSAGES.get(error, _words(error))
    if isinstance(error, dict) and len(error) == 1:
        ((name, value),) = error.items()
        if name == "InstructionError" and isinstance(value, list) and len(value) == 2:
            return f"Error processing Instruction {value[0]}: {_instruction_message(value[1])}"
        if name == "InsufficientFundsForRent" and isinstance(value, dict):
            return (
                f"Transaction results in an account ({value.get('account_index')}) "
                "with insufficient funds for rent"
            )
        if name == "DuplicateInstruction":
            return f"Transaction contains a duplicate instruction ({value}) that is not allowed"
        return _words(name)
    return str(error)


_LANDING_ERRORS: Final = frozenset(
    {
        "InstructionError",
        "InsufficientFundsForRent",
        "DuplicateInstruction",
        "ProgramExecutionTemporarilyRestricted",
    }
)


def landed(error: Any) -> bool:
    """Whether a transaction that failed with ``error`` (JSON) still lands, fee charged.

    Errors found while executing its instructions land with the error in their
    status; errors found before (signature, blockhash, fee payer, account loading)
    drop the transaction: it never gets a status.
    """
    name = error if isinstance(error, str) else next(iter(error), None)
    return name in _LANDING_ERRORS
