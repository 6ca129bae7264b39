"""The ledger node through solana-py's AsyncClient, as gridclear and wallets reach any ledger.

Each test starts a real ``gridclear-cloud ledger serve`` (the ``ledger_node``
fixture) and talks to it over HTTP; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from cloud.tests.ledger_node_support import SOL, Tokens, lamport_transfer, send, sign
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import TokenAccountOpts, TxOpts
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)
from spl.token.constants import TOKEN_PROGRAM_ID

from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.waiting import until

MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKKbpEZkPW9hWbLgvKJjxRGBoRcBMMA")
TOKEN_INSUFFICIENT_FUNDS = 1  # spl-token's TokenError::InsufficientFunds


@pytest.fixture
async def node(ledger_node: Callable[..., LedgerNodeProcess]) -> LedgerNodeProcess:
    # A short block time, so that blockhashes age within a test.
    return ledger_node(tick_ms=20)


@pytest.fixture
async def client(node: LedgerNodeProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(node.url) as client:
        yield client


async def funded(client: AsyncClient, lamports: int = 10 * SOL) -> Keypair:
    keypair = Keypair()
    signature = (await client.request_airdrop(keypair.pubkey(), lamports)).value
    statuses = await client.get_signature_statuses([signature])
    assert statuses.value[0] is not None
    return keypair


async def blockhash_valid(client: AsyncClient, blockhash: Hash) -> bool:
    # solana-py has no isBlockhashValid: asked as any client would.
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            client._provider.endpoint_uri,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "isBlockhashValid",
                "params": [str(blockhash)],
            },
        )
    value: bool = answer.json()["result"]["value"]
    return value


async def test_blockhash_slot_height_and_version(client: AsyncClient) -> None:
    before = (await client.get_block_height()).value
    first = (await client.get_latest_blockhash()).value
    after = (await client.get_block_height()).value
    assert before + 150 <= first.last_valid_block_height <= after + 150
    assert await blockhash_valid(client, first.blockhash) is True

    async def moved_on() -> bool:
        return (await client.get_latest_blockhash()).value.blockhash != first.blockhash

    await until(moved_on, what="a new block")
    later = (await client.get_latest_blockhash()).value
    assert later.last_valid_block_height > first.last_valid_block_height
    assert (await client.get_slot()).value >= 1
    assert (await client.get_version()).value.solana_core
    assert (await client.is_connected()) is True


async def test_airdrop_and_lamport_transfer(client: AsyncClient) -> None:
    payer = await funded(client, 5 * SOL)
    assert (await client.get_balance(payer.pubkey())).value == 5 * SOL
    receiver = Keypair().pubkey()
    signature = await send(client, payer, [lamport_transfer(payer, receiver, SOL)])

    assert (await client.get_balance(receiver)).value == SOL
    assert (await client.get_balance(payer.pubkey())).value == 4 * SOL - 5000
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.err is None
    assert status.confirmation_status == TransactionConfirmationStatus.Finalized
    # confirm_transaction is what wallets call after sending.
    confirmed = await client.confirm_transaction(signature, "finalized")
    assert confirmed.value[0] is not None
    transaction = await client.get_transaction(signature, max_supported_transaction_version=0)
    assert transaction.value is not None
    assert transaction.value.slot == status.slot
    meta = transaction.value.transaction.meta
    assert meta is not None
    assert meta.err is None
    assert meta.fee == 5000
    assert meta.log_messages
    assert "success" in meta.log_messages[-1]


async def test_tokens_mint_transfer_and_balances(client: AsyncClient) -> None:
    authority = await funded(client)
    seller, buyer = Keypair(), Keypair()
    tokens = Tokens(client, authority)
    await tokens.create()
    await tokens.open_account(seller.pubkey())
    await tokens.open_account(buyer.pubkey())
    await tokens.mint_to(seller.pubkey(), 12_345)
    await send(
        client, authority, [tokens.transfer_instruction(seller, buyer.pubkey(), 2_000)], [seller]
    )

    seller_balance = (
        await client.get_token_account_balance(tokens.account_of(seller.pubkey()))
    ).value
    assert (seller_balance.amount, seller_balance.decimals) == ("10345", 3)
    assert seller_balance.ui_amount_string == "10.345"
    buyer_accounts = (
        await client.get_token_accounts_by_owner_json_parsed(
            buyer.pubkey(), TokenAccountOpts(mint=tokens.mint)
        )
    ).value
    assert [str(a.pubkey) for a in buyer_accounts] == [str(tokens.account_of(buyer.pubkey()))]
    info = buyer_accounts[0].account.data.parsed["info"]
    assert info["tokenAmount"]["amount"] == "2000"
    assert info["owner"] == str(buyer.pubkey())
    assert info["mint"] == str(tokens.mint)

    by_program = (
        await client.get_token_accounts_by_owner(
            seller.pubkey(), TokenAccountOpts(program_id=TOKEN_PROGRAM_ID)
        )
    ).value
    assert [a.pubkey for a in by_program] == [tokens.account_of(seller.pubkey())]
    assert len(by_program[0].account.data) == 165

    mint_info = (await client.get_account_info_json_parsed(tokens.mint)).value
    assert mint_info is not None
    assert mint_info.data.parsed["info"]["supply"] == "12345"
    accounts = (
        await client.get_multiple_accounts([tokens.mint, Keypair().pubkey()], encoding="base64")
    ).value
    assert accounts[0] is not None
    assert len(accounts[0].data) == 82
    assert accounts[1] is None


async def test_statuses_with_and_without_history(client: AsyncClient) -> None:
    payer = await funded(client)
    signature = await send(client, payer, [lamport_transfer(payer, Keypair().pubkey(), SOL)])
    unknown = Keypair().sign_message(b"never sent")
    recent = (await client.get_signature_statuses([signature, unknown])).value
    history = (
        await client.get_signature_statuses([signature, unknown], search_transaction_history=True)
    ).value
    assert recent[0] is not None
    assert history[0] is not None
    assert recent[0].slot == history[0].slot
    assert recent[1] is None
    assert history[1] is None


async def test_simulate_does_not_change_state(client: AsyncClient) -> None:
    payer = await funded(client, 3 * SOL)
    receiver = Keypair().pubkey()
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    transaction = sign(payer, [lamport_transfer(payer, receiver, SOL)], blockhash)

    result = (await client.simulate_transaction(transaction, sig_verify=True)).value
    assert result.err is None
    assert result.units_consumed
    assert result.units_consumed > 0
    assert result.logs
    assert "success" in result.logs[-1]
    assert (await client.get_balance(receiver)).value == 0

    failing = sign(payer, [lamport_transfer(payer, receiver, 100 * SOL)], blockhash)
    result = (await client.simulate_transaction(failing)).value
    assert result.err == TransactionErrorInstructionError(0, InstructionErrorCustom(1))
    assert result.logs
    assert any("insufficient lamports" in line for line in result.logs)

    unknown_blockhash = sign(payer, [lamport_transfer(payer, receiver, SOL)], Hash.new_unique())
    result = (await client.simulate_transaction(unknown_blockhash)).value
    assert result.err == TransactionErrorFieldless.BlockhashNotFound
    replaced = (
        await client.simulate_transaction(unknown_blockhash, replace_recent_blockhash=True)
    ).value
    assert replaced.err is None
    assert replaced.replacement_blockhash is not None

    # Signed by the wrong key: refused when signatures are checked, not otherwise.
    message = sign(payer, [lamport_transfer(payer, receiver, SOL)], blockhash).message
    bad = VersionedTransaction.populate(message, [Keypair().sign_message(bytes(message))])
    result = (await client.simulate_transaction(bad, sig_verify=True)).value
    assert result.err == TransactionErrorFieldless.SignatureFailure
    assert (await client.simulate_transaction(bad)).value.err is None


async def test_preflight_failure_raises_solana_pys_exception(client: AsyncClient) -> None:
    authority = await funded(client)
    seller, buyer = Keypair(), Keypair()
    tokens = Tokens(client, authority)
    await tokens.create()
    await tokens.open_account(seller.pubkey())
    await tokens.open_account(buyer.pubkey())
    await tokens.mint_to(seller.pubkey(), 100)
    balance_before = (await client.get_balance(authority.pubkey())).value

    with pytest.raises(RPCException) as raised:
        await send(
            client, authority, [tokens.transfer_instruction(seller, buyer.pubkey(), 101)], [seller]
        )
    failure = raised.value.args[0]
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert failure.message.startswith(
        "Transaction simulation failed: Error processing Instruction 0"
    )
    assert isinstance(failure.data, RpcSimulateTransactionResult)
    assert failure.data.err == TransactionErrorInstructionError(
        0, InstructionErrorCustom(TOKEN_INSUFFICIENT_FUNDS)
    )
    assert failure.data.logs
    assert any("insufficient funds" in line for line in failure.data.logs)
    # Nothing was charged: a failed preflight never reaches the ledger.
    assert (await client.get_balance(authority.pubkey())).value == balance_before


async def test_failed_transaction_without_preflight_lands_with_its_error(
    client: AsyncClient,
) -> None:
    payer = await funded(client, 2 * SOL)
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    transaction = sign(payer, [lamport_transfer(payer, Keypair().pubkey(), 50 * SOL)], blockhash)
    signature = (await client.send_transaction(transaction, opts=TxOpts(skip_preflight=True))).value
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.err == TransactionErrorInstructionError(0, InstructionErrorCustom(1))
    assert (await client.get_balance(payer.pubkey())).value == 2 * SOL - 5000  # the fee


async def test_oversize_transaction_is_refused(client: AsyncClient) -> None:
    payer = await funded(client)
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    memo = Instruction(MEMO_PROGRAM, b"x" * 1200, [])
    transaction = sign(payer, [memo], blockhash)
    assert len(bytes(transaction)) > 1232
    with pytest.raises(RPCException) as raised:
        await client.send_transaction(transaction)
    assert "too large" in str(raised.value)
    with pytest.raises(RPCException):
        await client.send_transaction(transaction, opts=TxOpts(skip_preflight=True))


async def test_blockhash_window(client: AsyncClient) -> None:
    payer = await funded(client, 5 * SOL)
    old = (await client.get_latest_blockhash()).value

    async def height() -> int:
        return (await client.get_block_height()).value

    # A blockhash a few blocks old, no longer the latest, is still accepted.
    start = await height()
    await until(lambda: _above(height, start + 3), what="three more blocks")
    assert (await client.get_latest_blockhash()).value.blockhash != old.blockhash
    receiver = Keypair().pubkey()
    within = sign(payer, [lamport_transfer(payer, receiver, SOL)], old.blockhash)
    await client.send_transaction(within)
    assert (await client.get_balance(receiver)).value == SOL

    # Once the height passes lastValidBlockHeight, the blockhash has expired.
    await until(lambda: _above(height, old.last_valid_block_height), what="the blockhash to expire")
    assert await blockhash_valid(client, old.blockhash) is False
    expired = sign(payer, [lamport_transfer(payer, receiver, 2 * SOL)], old.blockhash)
    with pytest.raises(RPCException) as raised:
        await client.send_transaction(expired)
    failure = raised.value.args[0]
    assert isinstance(failure, SendTransactionPreflightFailureMessage)
    assert failure.data.err == TransactionErrorFieldless.BlockhashNotFound
    # Without preflight a validator takes it and drops it: it never lands.
    signature = (await client.send_transaction(expired, opts=TxOpts(skip_preflight=True))).value
    assert (await client.get_signature_statuses([signature])).value == [None]
    assert (await client.get_balance(receiver)).value == SOL


async def _above(height: Callable[[], Awaitable[int]], target: int) -> bool:
    return await height() > target


async def test_duplicate_is_refused_as_already_processed(client: AsyncClient) -> None:
    payer = await funded(client, 5 * SOL)
    blockhash = (await client.get_latest_blockhash()).value.blockhash
    receiver = Keypair().pubkey()
    transaction = sign(payer, [lamport_transfer(payer, receiver, SOL)], blockhash)
    await client.send_transaction(transaction)
    with pytest.raises(RPCException) as raised:
        await client.send_transaction(transaction)
    assert raised.value.args[0].data.err == TransactionErrorFieldless.AlreadyProcessed
    await client.send_transaction(transaction, opts=TxOpts(skip_preflight=True))
    assert (await client.get_balance(receiver)).value == SOL


async def test_airdrop_is_refused_without_dev(
    ledger_node: Callable[..., LedgerNodeProcess],
) -> None:
    node = ledger_node(dev=False)
    async with AsyncClient(node.url) as client:
        with pytest.raises(RPCException):
            await client.request_airdrop(Keypair().pubkey(), SOL)
        assert (await client.get_balance(Keypair().pubkey())).value == 0
