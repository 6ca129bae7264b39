"""The ledger node's pure rules: the blockhash window, amounts, error texts, transaction limits."""

from __future__ import annotations

import base64
import os
from decimal import Decimal

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorInstructionError,
)

from cloud.tests.ledger_node_support import lamport_transfer, sign
from gridclear.cloud.ledger.node.accounts import (
    TOKEN_PROGRAM_ID,
    encode_account,
    parse_token_account,
    token_amount,
)
from gridclear.cloud.ledger.node.blocks import MAX_PROCESSING_AGE, Block, BlockWindow
from gridclear.cloud.ledger.node.codec import (
    PACKET_DATA_SIZE,
    RpcError,
    decode_transaction,
    error_json,
    error_message,
    landed,
)


def genesis() -> Block:
    return Block(height=0, slot=0, blockhash=Hash(os.urandom(32)), unix_time=0)


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=400))
def test_a_blockhash_is_valid_for_exactly_150_blocks_after_its_own(made: int, now: int) -> None:
    window = BlockWindow([genesis()])
    hashes = {0: window.latest.blockhash}
    for _ in range(max(made, now)):
        block = window.advance(unix_time=0)
        hashes[block.height] = block.blockhash
    # Replay up to "now" in a second window built from the same genesis chain.
    replay = BlockWindow([Block(height=0, slot=0, blockhash=hashes[0], unix_time=0)])
    for _ in range(now):
        replay.advance(unix_time=0)
    if made > now:
        assert not replay.is_valid(hashes[made])  # not made yet
    else:
        assert replay.is_valid(hashes[made]) == (now - made <= MAX_PROCESSING_AGE)
    assert replay.last_valid_block_height == now + MAX_PROCESSING_AGE


@given(st.integers(min_value=1, max_value=500))
def test_a_window_rebuilt_from_stored_blocks_is_the_same(count: int) -> None:
    window = BlockWindow([genesis()])
    stored = [window.latest]
    for _ in range(count):
        stored.append(window.advance(unix_time=0))
    rebuilt = BlockWindow(reversed(stored))  # any order, and more than the window holds
    assert rebuilt.latest == window.latest
    assert rebuilt.blocks == window.blocks
    assert rebuilt.advance(unix_time=0) == window.advance(unix_time=0)


def test_chains_from_different_genesis_hashes_share_no_blockhash() -> None:
    one, two = BlockWindow([genesis()]), BlockWindow([genesis()])
    for _ in range(200):
        assert not two.is_valid(one.advance(unix_time=0).blockhash)
        two.advance(unix_time=0)


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=18))
def test_token_amount_is_exact(amount: int, decimals: int) -> None:
    ui = token_amount(amount, decimals)
    assert ui["amount"] == str(amount)
    assert Decimal(ui["uiAmountString"]) == Decimal(amount).scaleb(-decimals)
    assert not ui["uiAmountString"].endswith(".")
    if "." in ui["uiAmountString"]:
        assert not ui["uiAmountString"].endswith("0")


def test_token_amount_examples() -> None:
    assert token_amount(10345, 3)["uiAmountString"] == "10.345"
    assert token_amount(1000, 3)["uiAmountString"] == "1"
    assert token_amount(0, 3)["uiAmountString"] == "0"
    assert token_amount(5, 0)["uiAmountString"] == "5"
    assert token_amount(1500, 3)["uiAmount"] == 1.5


def test_error_json_and_messages_as_a_validator_writes_them() -> None:
    custom = TransactionErrorInstructionError(0, InstructionErrorCustom(1))
    assert error_json(custom) == {"InstructionError": [0, {"Custom": 1}]}
    assert error_message(error_json(custom)) == (
        "Error processing Instruction 0: custom program error: 0x1"
    )
    fieldless = TransactionErrorInstructionError(2, InstructionErrorFieldless.InvalidAccountData)
    assert error_message(error_json(fieldless)) == (
        "Error processing Instruction 2: invalid account data for instruction"
    )
    assert error_json(TransactionErrorFieldless.BlockhashNotFound) == "BlockhashNotFound"
    assert error_message("BlockhashNotFound") == "Blockhash not found"
    assert error_message("AlreadyProcessed") == "This transaction has already been processed"
    rent = error_json(TransactionErrorInsufficientFundsForRent(1))
    assert (
        error_message(rent)
        == "Transaction results in an account (1) with insufficient funds for rent"
    )
    assert landed(error_json(custom))
    assert landed(rent)
    for dropped in ("BlockhashNotFound", "SignatureFailure", "AccountNotFound", "AlreadyProcessed"):
        assert not landed(dropped)


def test_transaction_limits() -> None:
    payer = Keypair()
    transaction = sign(payer, [lamport_transfer(payer, Keypair().pubkey(), 1)], Hash.default())
    raw = bytes(transaction)
    decoded, decoded_raw = decode_transaction(base64.b64encode(raw).decode(), "base64")
    assert decoded == transaction
    assert decoded_raw == raw
    assert decode_transaction(base58.b58encode(raw).decode(), "base58")[0] == transaction

    too_big = raw + bytes(PACKET_DATA_SIZE + 1 - len(raw))
    for encoding, text in [
        ("base64", base64.b64encode(too_big).decode()),
        ("base58", base58.b58encode(too_big).decode()),
    ]:
        with pytest.raises(RpcError, match="too large") as raised:
            decode_transaction(text, encoding)
        assert raised.value.code == -32602
    with pytest.raises(RpcError, match="failed to deserialize"):
        decode_transaction(base64.b64encode(b"\x01\x02").decode(), "base64")
    with pytest.raises(RpcError, match="unsupported encoding"):
        decode_transaction("00", "hex")


def token_account_data(mint: Pubkey, owner: Pubkey, amount: int) -> bytes:
    data = bytearray(165)
    data[0:32] = bytes(mint)
    data[32:64] = bytes(owner)
    data[64:72] = amount.to_bytes(8, "little")
    data[108] = 1  # initialized
    return bytes(data)


def mint_data(decimals: int, supply: int) -> bytes:
    data = bytearray(82)
    data[36:44] = supply.to_bytes(8, "little")
    data[44] = decimals
    data[45] = 1
    return bytes(data)


def test_json_parsed_token_account_and_fallbacks() -> None:
    mint, owner = Keypair().pubkey(), Keypair().pubkey()
    mint_account = Account(1_461_600, mint_data(3, 5000), TOKEN_PROGRAM_ID)
    token_account = Account(2_039_280, token_account_data(mint, owner, 1250), TOKEN_PROGRAM_ID)

    def lookup(key: Pubkey) -> Account | None:
        return mint_account if key == mint else None

    parsed = parse_token_account(token_account)
    assert parsed is not None
    assert (parsed.mint, parsed.owner, parsed.amount) == (mint, owner, 1250)
    ui = encode_account(token_account, encoding="jsonParsed", lookup=lookup)
    assert ui["data"]["program"] == "spl-token"
    assert ui["data"]["parsed"]["type"] == "account"
    assert ui["data"]["parsed"]["info"]["tokenAmount"]["uiAmountString"] == "1.25"
    assert ui["data"]["parsed"]["info"]["state"] == "initialized"
    mint_ui = encode_account(mint_account, encoding="jsonParsed", lookup=lookup)
    assert mint_ui["data"]["parsed"]["info"]["supply"] == "5000"
    # The mint unknown: no decimals, so base64 (as a validator falls back).
    orphan = encode_account(token_account, encoding="jsonParsed", lookup=lambda key: None)
    assert orphan["data"][1] == "base64"
    sliced = encode_account(
        token_account, encoding="base64", lookup=lookup, data_slice={"offset": 64, "length": 8}
    )
    assert base64.b64decode(sliced["data"][0]) == (1250).to_bytes(8, "little")
    with pytest.raises(RpcError):
        encode_account(token_account, encoding="base58", lookup=lookup)  # over 128 bytes
