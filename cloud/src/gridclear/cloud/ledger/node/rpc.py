"""Solana's JSON-RPC, the subset gridclear and wallets use, answered from a :class:`LedgerEngine`.

:func:`handle_body` takes the raw body of a POST and returns the raw answer:
a single request or a batch (a JSON array, answered by an array in the same
order), with JSON-RPC 2.0's errors (``-32700`` parse error, ``-32600`` invalid
request, ``-32601`` unknown method, ``-32602`` bad params) and Solana's own
(``-32002`` preflight failure, ``-32003`` signature verification failure,
``-32016`` minimum context slot not reached). Every answer is built here in the
exact shape a validator writes, because solana-py parses answers with solders,
which panics on a malformed one.

Commitment parameters are accepted and ignored: a block is final as soon as it is
produced, so ``processed``, ``confirmed`` and ``finalized`` see the same state.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from gridclear.cloud.ledger.node.accounts import (
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    encode_account,
    parse_mint_decimals,
    parse_token_account,
    token_amount,
)
from gridclear.cloud.ledger.node.blocks import MAX_PROCESSING_AGE
from gridclear.cloud.ledger.node.codec import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    decode_transaction,
)
from gridclear.cloud.ledger.node.engine import LedgerEngine, SendOutcome, Simulation

__all__ = ["API_VERSION", "METHODS", "RpcContext", "handle_body"]

API_VERSION: Final = "2.2.0"
"""The Solana RPC version this node's answers follow (reported by ``getVersion``)."""

_FEATURE_SET: Final = 3294202862
_LAMPORTS_PER_SIGNATURE: Final = 5000
_MAX_MULTIPLE_ACCOUNTS: Final = 100
_MAX_SIGNATURE_STATUSES: Final = 256
_MAX_BATCH: Final = 1000
_RECENT_STATUS_SLOTS: Final = 300  # a validator's status cache spans about this many slots
_MIN_CONTEXT_SLOT_NOT_REACHED: Final = -32016
_UNSUPPORTED_TRANSACTION_VERSION: Final = -32015
_NODE_UNHEALTHY: Final = -32005


@dataclass(frozen=True, slots=True)
class RpcContext:
    """What the methods need: the engine, and whether ``requestAirdrop`` is served (``--dev``)."""

    engine: LedgerEngine
    dev: bool = False


Handler = Callable[[RpcContext, list[Any]], Awaitable[Any]]

# ------------------------------------------------------------ parameters


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {message}")


def _arg(params: list[Any], index: int, name: str) -> Any:
    if index >= len(params):
        raise _invalid(f"missing {name}.")
    return params[index]


def _config(params: list[Any], index: int) -> dict[str, Any]:
    if index >= len(params) or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise _invalid("invalid type: expected a configuration object.")
    return config


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise _invalid("invalid type: expected a base58 public key.")
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, "Invalid param: Invalid") from None


def _signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise _invalid("invalid type: expected a base58 signature.")
    try:
        return Signature.from_string(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, "Invalid param: Invalid") from None


def _bool(config: dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(f"invalid type: {key} must be a boolean.")
    return value


def _context(ctx: RpcContext, config: dict[str, Any]) -> dict[str, Any]:
    latest = ctx.engine.latest
    assert latest is not None
    minimum = config.get("minContextSlot")
    if minimum is not None:
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise _invalid("invalid type: minContextSlot must be an unsigned integer.")
        if minimum > latest.slot:
            raise RpcError(
                _MIN_CONTEXT_SLOT_NOT_REACHED,
                "Minimum context slot has not been reached",
                {"contextSlot": latest.slot},
            )
    return {"slot": latest.slot, "apiVersion": API_VERSION}


def _with_context(ctx: RpcContext, config: dict[str, Any], value: Any) -> dict[str, Any]:
    return {"context": _context(ctx, config), "value": value}


# ------------------------------------------------------------ cluster


async def _get_health(ctx: RpcContext, params: list[Any]) -> Any:
    if not ctx.engine.healthy:
        raise RpcError(_NODE_UNHEALTHY, "Node is unhealthy", {"numSlotsBehind": None})
    return "ok"


async def _get_version(ctx: RpcContext, params: list[Any]) -> Any:
    return {"solana-core": API_VERSION, "feature-set": _FEATURE_SET}


async def _get_genesis_hash(ctx: RpcContext, params: list[Any]) -> Any:
    return ctx.engine.genesis_hash


async def _get_slot(ctx: RpcContext, params: list[Any]) -> Any:
    return _context(ctx, _config(params, 0))["slot"]


async def _get_block_height(ctx: RpcContext, params: list[Any]) -> Any:
    _context(ctx, _config(params, 0))
    latest = ctx.engine.latest
    assert latest is not None
    return latest.height


async def _get_latest_blockhash(ctx: RpcContext, params: list[Any]) -> Any:
    config = _config(params, 0)
    context = _context(ctx, config)
    latest = ctx.engine.latest
    assert latest is not None
    return {
        "context": context,
        "value": {
            "blockhash": str(latest.blockhash),
            "lastValidBlockHeight": latest.height + MAX_PROCESSING_AGE,
        },
    }


async def _is_blockhash_valid(ctx: RpcContext, params: list[Any]) -> Any:
    from solders.hash import Hash

    text = _arg(params, 0, "blockhash")
    config = _config(params, 1)
    if not isinstance(text, str):
        raise _invalid("invalid type: expected a base58 blockhash.")
    try:
        blockhash = Hash.from_string(text)
    except ValueError:
        raise RpcError(INVALID_PARAMS, "Invalid param: Invalid") from None
    valid = await ctx.engine.submit(lambda e: e.window.is_valid(blockhash), writes=False)
    return _with_context(ctx, config, valid)


async def _get_minimum_balance(ctx: RpcContext, params: list[Any]) -> Any:
    size = _arg(params, 0, "data length")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid("invalid type: expected an unsigned integer.")
    return await ctx.engine.submit(
        lambda e: e.svm.minimum_balance_for_rent_exemption(size), writes=False
    )


async def _get_fee_for_message(ctx: RpcContext, params: list[Any]) -> Any:
    encoded = _arg(params, 0, "message")
    config = _config(params, 1)
    if not isinstance(encoded, str):
        raise _invalid("invalid type: expected a base64 message.")
    try:
        message = from_bytes_versioned(base64.b64decode(encoded, validate=True))
    except Exception as exc:
        raise _invalid(f"invalid message: {exc}") from None
    valid = await ctx.engine.submit(
        lambda e: e.window.is_valid(message.recent_blockhash), writes=False
    )
    fee = message.header.num_required_signatures * _LAMPORTS_PER_SIGNATURE if valid else None
    return _with_context(ctx, config, fee)


# ------------------------------------------------------------ accounts


def _encoding(config: dict[str, Any], default: str = "binary") -> str:
    encoding = config.get("encoding", default)
    if not isinstance(encoding, str):
        raise _invalid("invalid type: encoding must be a string.")
    return encoding


async def _get_account_info(ctx: RpcContext, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "public key"))
    config = _config(params, 1)
    encoding = _encoding(config)
    data_slice = config.get("dataSlice")

    def read(engine: LedgerEngine) -> Any:
        account = engine.account(key)
        if account is None:
            return None
        return encode_account(
            account, encoding=encoding, lookup=engine.account, data_slice=data_slice
        )

    value = await ctx.engine.submit(read, writes=False)
    return _with_context(ctx, config, value)


async def _get_multiple_accounts(ctx: RpcContext, params: list[Any]) -> Any:
    raw_keys = _arg(params, 0, "public keys")
    config = _config(params, 1)
    if not isinstance(raw_keys, list):
        raise _invalid("invalid type: expected an array of public keys.")
    if len(raw_keys) > _MAX_MULTIPLE_ACCOUNTS:
        raise _invalid(f"Too many inputs provided; max {_MAX_MULTIPLE_ACCOUNTS}")
    keys = [_pubkey(key) for key in raw_keys]
    encoding = _encoding(config)
    data_slice = config.get("dataSlice")

    def read(engine: LedgerEngine) -> Any:
        values = []
        for key in keys:
            account = engine.account(key)
            values.append(
                None
                if account is None
                else encode_account(
                    account, encoding=encoding, lookup=engine.account, data_slice=data_slice
                )
            )
        return values

    value = await ctx.engine.submit(read, writes=False)
    return _with_context(ctx, config, value)


async def _get_balance(ctx: RpcContext, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "public key"))
    config = _config(params, 1)

    def read(engine: LedgerEngine) -> int:
        account = engine.account(key)
        return 0 if account is None else account.lamports

    return _with_context(ctx, config, await ctx.engine.submit(read, writes=False))


async def _get_token_account_balance(ctx: RpcContext, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "public key"))
    config = _config(params, 1)

    def read(engine: LedgerEngine) -> Any:
        account = engine.account(key)
        if account is None:
            raise RpcError(INVALID_PARAMS, "Invalid param: could not find account")
        parsed = parse_token_account(account)
        if parsed is None:
            raise RpcError(INVALID_PARAMS, "Invalid param: not a Token account")
        decimals = parse_mint_decimals(engine.account(parsed.mint))
        if decimals is None:
            raise RpcError(INVALID_PARAMS, "Invalid param: could not find mint")
        return token_amount(parsed.amount, decimals)

    return _with_context(ctx, config, await ctx.engine.submit(read, writes=False))


async def _get_token_accounts_by_owner(ctx: RpcContext, params: list[Any]) -> Any:
    owner = _pubkey(_arg(params, 0, "owner"))
    token_filter = _arg(params, 1, "filter")
    config = _config(params, 2)
    encoding = _encoding(config)
    data_slice = config.get("dataSlice")
    if not isinstance(token_filter, dict) or len(token_filter) != 1:
        raise _invalid("expected a filter with either mint or programId.")
    mint: Pubkey | None = None
    program: Pubkey | None = None
    if "mint" in token_filter:
        mint = _pubkey(token_filter["mint"])
    elif "programId" in token_filter:
        program = _pubkey(token_filter["programId"])
        if program not in (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID):
            raise RpcError(INVALID_PARAMS, "Invalid param: unrecognized Token program id")
    else:
        raise _invalid("expected a filter with either mint or programId.")

    def read(engine: LedgerEngine) -> Any:
        token_program = program
        if mint is not None:
            mint_account = engine.account(mint)
            if mint_account is None or parse_mint_decimals(mint_account) is None:
                raise RpcError(INVALID_PARAMS, "Invalid param: could not find mint")
            token_program = mint_account.owner
        assert token_program is not None
        found = []
        for key, account in engine.program_accounts(token_program):
            parsed = parse_token_account(account)
            if parsed is None or parsed.owner != owner:
                continue
            if mint is not None and parsed.mint != mint:
                continue
            found.append(
                {
                    "pubkey": str(key),
                    "account": encode_account(
                        account, encoding=encoding, lookup=engine.account, data_slice=data_slice
                    ),
                }
            )
        found.sort(key=lambda item: item["pubkey"])
        return found

    return _with_context(ctx, config, await ctx.engine.submit(read, writes=False))


# ------------------------------------------------------------ transactions


def _status(slot: int, err: Any) -> dict[str, Any]:
    return {
        "slot": slot,
        "confirmations": None,
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "confirmationStatus": "finalized",
    }


async def _get_signature_statuses(ctx: RpcContext, params: list[Any]) -> Any:
    raw = _arg(params, 0, "signatures")
    config = _config(params, 1)
    if not isinstance(raw, list):
        raise _invalid("invalid type: expected an array of signatures.")
    if len(raw) > _MAX_SIGNATURE_STATUSES:
        raise _invalid(f"Too many inputs provided; max {_MAX_SIGNATURE_STATUSES}")
    signatures = [bytes(_signature(item)) for item in raw]
    history = _bool(config, "searchTransactionHistory", False)

    def read(engine: LedgerEngine) -> Any:
        oldest = engine.window.latest.slot - _RECENT_STATUS_SLOTS
        statuses: list[Any] = []
        for signature in signatures:
            found = engine.store.signature_slot(signature)
            if found is None or (not history and found[0] < oldest):
                statuses.append(None)
            else:
                statuses.append(_status(*found))
        return statuses

    return _with_context(ctx, config, await ctx.engine.submit(read, writes=False))


def _ui_message(transaction: VersionedTransaction) -> dict[str, Any]:
    import base58

    message = transaction.message
    header = message.header
    ui: dict[str, Any] = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": [str(key) for key in message.account_keys],
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(ix.accounts),
                "data": base58.b58encode(ix.data).decode(),
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
    }
    lookups = getattr(message, "address_table_lookups", None)
    if lookups is not None:
        ui["addressTableLookups"] = [
            {
                "accountKey": str(lookup.account_key),
                "writableIndexes": list(lookup.writable_indexes),
                "readonlyIndexes": list(lookup.readonly_indexes),
            }
            for lookup in lookups
        ]
    return ui


async def _get_transaction(ctx: RpcContext, params: list[Any]) -> Any:
    signature = _signature(_arg(params, 0, "signature"))
    config = _config(params, 1)
    encoding = _encoding(config, "json")
    if encoding not in ("json", "base64", "base58"):
        raise _invalid(f"unsupported encoding {encoding!r}; this node serves json, base64, base58.")
    max_version = config.get("maxSupportedTransactionVersion")
    record = await ctx.engine.submit(lambda e: e.store.signature(bytes(signature)), writes=False)
    if record is None or not record.tx:
        return None
    transaction = VersionedTransaction.from_bytes(record.tx)
    version: Any = "legacy" if transaction.message.__class__.__name__ == "Message" else 0
    if version == 0 and (max_version is None or max_version < 0):
        raise RpcError(
            _UNSUPPORTED_TRANSACTION_VERSION,
            "Transaction version (0) is not supported by the requesting client. Please try the "
            "request again with the following configuration parameter: "
            '"maxSupportedTransactionVersion": 0',
        )
    encoded: Any
    if encoding == "base64":
        encoded = [base64.b64encode(record.tx).decode(), "base64"]
    elif encoding == "base58":
        import base58

        encoded = [base58.b58encode(record.tx).decode(), "base58"]
    else:
        encoded = {
            "signatures": [str(s) for s in transaction.signatures],
            "message": _ui_message(transaction),
        }
    latest = ctx.engine.latest
    assert latest is not None
    answer: dict[str, Any] = {
        "slot": record.slot,
        "blockTime": latest.unix_time,
        "transaction": encoded,
        "meta": {
            "err": record.err,
            "status": {"Ok": None} if record.err is None else {"Err": record.err},
            "fee": record.fee,
            "preBalances": [],
            "postBalances": [],
            "innerInstructions": [],
            "logMessages": record.logs,
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": record.units,
        },
    }
    if max_version is not None:
        answer["version"] = version
    return answer


def _transaction_param(
    params: list[Any], config: dict[str, Any]
) -> tuple[VersionedTransaction, bytes]:
    encoded = _arg(params, 0, "transaction")
    encoding = config.get("encoding", "base58")
    if not isinstance(encoding, str):
        raise _invalid("invalid type: encoding must be a string.")
    return decode_transaction(encoded, encoding)


async def _send_transaction(ctx: RpcContext, params: list[Any]) -> Any:
    config = _config(params, 1)
    transaction, raw = _transaction_param(params, config)
    preflight = not _bool(config, "skipPreflight", False)
    outcome: SendOutcome = await ctx.engine.submit(
        lambda e: e.send(transaction, raw, preflight=preflight), writes=True
    )
    return str(outcome.signature)


async def _simulate_transaction(ctx: RpcContext, params: list[Any]) -> Any:
    config = _config(params, 1)
    transaction, _raw = _transaction_param(params, config)
    sig_verify = _bool(config, "sigVerify", False)
    replace = _bool(config, "replaceRecentBlockhash", False)
    if sig_verify and replace:
        raise _invalid("sigVerify may not be used with replaceRecentBlockhash")
    accounts_config = config.get("accounts")
    addresses: list[Pubkey] | None = None
    accounts_encoding = "base64"
    if accounts_config is not None:
        if not isinstance(accounts_config, dict) or not isinstance(
            accounts_config.get("addresses"), list
        ):
            raise _invalid("accounts needs addresses.")
        addresses = [_pubkey(key) for key in accounts_config["addresses"]]
        accounts_encoding = _encoding(accounts_config, "base64")
        if accounts_encoding not in ("base64", "jsonParsed"):
            raise _invalid("accounts.encoding must be base64 or jsonParsed.")

    def run(engine: LedgerEngine) -> tuple[Simulation, list[Any] | None]:
        simulation = engine.simulate(
            transaction, sig_verify=sig_verify, replace_blockhash=replace, addresses=addresses
        )
        encoded = None
        if simulation.accounts is not None:
            encoded = [
                None
                if account is None or account.lamports == 0
                else encode_account(account, encoding=accounts_encoding, lookup=engine.account)
                for account in simulation.accounts
            ]
        return simulation, encoded

    simulation, accounts = await ctx.engine.submit(run, writes=False)
    latest = ctx.engine.latest
    assert latest is not None
    return _with_context(
        ctx,
        config,
        {
            "err": simulation.err,
            "logs": simulation.logs,
            "accounts": accounts,
            "unitsConsumed": simulation.units,
            "loadedAccountsDataSize": None,
            "returnData": None
            if simulation.return_data is None
            else {
                "programId": str(simulation.return_data[0]),
                "data": [base64.b64encode(simulation.return_data[1]).decode(), "base64"],
            },
            "innerInstructions": None,
            "replacementBlockhash": {
                "blockhash": str(latest.blockhash),
                "lastValidBlockHeight": latest.height + MAX_PROCESSING_AGE,
            }
            if replace
            else None,
            "fee": simulation.fee,
            "preBalances": None,
            "postBalances": None,
            "preTokenBalances": None,
            "postTokenBalances": None,
            "loadedAddresses": None,
        },
    )


async def _request_airdrop(ctx: RpcContext, params: list[Any]) -> Any:
    if not ctx.dev:
        # What a validator without a faucet answers.
        raise RpcError(INVALID_REQUEST, "Invalid request")
    key = _pubkey(_arg(params, 0, "public key"))
    lamports = _arg(params, 1, "lamports")
    _config(params, 2)
    if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
        raise _invalid("invalid type: lamports must be a positive integer.")
    signature = await ctx.engine.submit(lambda e: e.airdrop(key, lamports), writes=True)
    return str(signature)


METHODS: Final[dict[str, Handler]] = {
    "getAccountInfo": _get_account_info,
    "getBalance": _get_balance,
    "getBlockHeight": _get_block_height,
    "getFeeForMessage": _get_fee_for_message,
    "getGenesisHash": _get_genesis_hash,
    "getHealth": _get_health,
    "getLatestBlockhash": _get_latest_blockhash,
    "getMinimumBalanceForRentExemption": _get_minimum_balance,
    "getMultipleAccounts": _get_multiple_accounts,
    "getSignatureStatuses": _get_signature_statuses,
    "getSlot": _get_slot,
    "getTokenAccountBalance": _get_token_account_balance,
    "getTokenAccountsByOwner": _get_token_accounts_by_owner,
    "getTransaction": _get_transaction,
    "getVersion": _get_version,
    "isBlockhashValid": _is_blockhash_valid,
    "requestAirdrop": _request_airdrop,
    "sendTransaction": _send_transaction,
    "simulateTransaction": _simulate_transaction,
}
"""Every served method, by its RPC name."""

# ------------------------------------------------------------ dispatch


def _error(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}


async def _answer(ctx: RpcContext, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return _error(None, RpcError(INVALID_REQUEST, "Invalid request"))
    request_id = request.get("id")
    if isinstance(request_id, (dict, list, bool)) or request.get("jsonrpc") != "2.0":
        return _error(None, RpcError(INVALID_REQUEST, "Invalid request"))
    method = request.get("method")
    if not isinstance(method, str):
        return _error(request_id, RpcError(INVALID_REQUEST, "Invalid request"))
    handler = METHODS.get(method)
    if handler is None:
        return _error(request_id, RpcError(METHOD_NOT_FOUND, "Method not found"))
    params = request.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        return _error(request_id, _invalid("invalid type: map, expected a sequence."))
    try:
        result = await handler(ctx, params)
    except RpcError as exc:
        return _error(request_id, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # never let an unexpected failure break the answer's shape
        import logging

        logging.getLogger(__name__).exception("RPC method %s failed", method)
        return _error(request_id, RpcError(INTERNAL_ERROR, f"Internal error: {exc}"))
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


async def handle_body(ctx: RpcContext, body: bytes) -> bytes:
    """The JSON answer to a JSON-RPC request body (single or batch)."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _dump(_error(None, RpcError(PARSE_ERROR, "Parse error")))
    if isinstance(request, list):
        if not request or len(request) > _MAX_BATCH:
            return _dump(_error(None, RpcError(INVALID_REQUEST, "Invalid request")))
        answers = await asyncio.gather(*(_answer(ctx, item) for item in request))
        return _dump(list(answers))
    return _dump(await _answer(ctx, request))


def _dump(answer: Any) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode()
