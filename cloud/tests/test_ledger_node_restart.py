"""The ledger node's state survives SIGTERM and ``kill -9``: balances, signatures, blockhashes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import httpx
import pytest
from cloud.tests.ledger_node_support import SOL, Tokens, lamport_transfer, send, sign
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import create_lookup_table, extend_lookup_table
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorFieldless

from gridclear.devtools.ledger import LedgerNodeProcess
from gridclear.devtools.waiting import until


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
async def test_restart_keeps_balances_and_refuses_the_same_transaction(
    ledger_node: Callable[..., LedgerNodeProcess], how: str
) -> None:
    node = ledger_node()
    payer, seller, buyer = Keypair(), Keypair(), Keypair()
    async with AsyncClient(node.url) as client:
        await client.request_airdrop(payer.pubkey(), 10 * SOL)
        tokens = Tokens(client, payer)
        await tokens.create()
        await tokens.open_account(seller.pubkey())
        await tokens.open_account(buyer.pubkey())
        await tokens.mint_to(seller.pubkey(), 5_000)
        blockhash = (await client.get_latest_blockhash()).value.blockhash
        transfer = sign(
            payer, [tokens.transfer_instruction(seller, buyer.pubkey(), 1_250)], blockhash, [seller]
        )
        # Acknowledged, then the node dies at once: the answer implies the commit.
        signature = (await client.send_transaction(transfer)).value
        slot_before = (await client.get_slot()).value
        genesis = (await client.get_genesis_hash()).value
        lamports_before = (await client.get_balance(payer.pubkey())).value

    url = node.url
    if how == "kill -9":
        node.kill()
    else:
        assert node.stop() == 0
    node.start()
    assert node.url == url  # back where clients expect it

    async with AsyncClient(node.url) as client:
        buyer_balance = await client.get_token_account_balance(tokens.account_of(buyer.pubkey()))
        assert buyer_balance.value.amount == "1250"
        seller_balance = await client.get_token_account_balance(tokens.account_of(seller.pubkey()))
        assert seller_balance.value.amount == "3750"
        assert (await client.get_balance(payer.pubkey())).value == lamports_before
        mint = (await client.get_account_info_json_parsed(tokens.mint)).value
        assert mint is not None
        assert mint.data.parsed["info"]["supply"] == "5000"

        assert (await client.get_slot()).value >= slot_before
        assert (await client.get_genesis_hash()).value == genesis
        status = (
            await client.get_signature_statuses([signature], search_transaction_history=True)
        ).value[0]
        assert status is not None
        assert status.err is None

        # The blockhash window came back too: the same bytes are a duplicate, not new.
        with pytest.raises(RPCException) as raised:
            await client.send_transaction(transfer)
        assert raised.value.args[0].data.err == TransactionErrorFieldless.AlreadyProcessed
        await client.send_transaction(transfer, opts=TxOpts(skip_preflight=True))
        buyer_balance = await client.get_token_account_balance(tokens.account_of(buyer.pubkey()))
        assert buyer_balance.value.amount == "1250"

        # And the ledger goes on: a new transaction with a new blockhash lands.
        blockhash = (await client.get_latest_blockhash()).value.blockhash
        receiver = Keypair().pubkey()
        await client.send_transaction(
            sign(payer, [lamport_transfer(payer, receiver, SOL)], blockhash)
        )
        assert (await client.get_balance(receiver)).value == SOL


async def test_a_second_node_on_the_same_state_refuses_to_start(
    ledger_node: Callable[..., LedgerNodeProcess],
) -> None:
    from gridclear.devtools.ledger import LedgerNodeStartError

    first = ledger_node()
    second = LedgerNodeProcess(workdir=first.workdir / "second", state_dir=first.state_dir)
    second.workdir.mkdir()
    with pytest.raises(LedgerNodeStartError, match="locked"):
        second.start()
    async with AsyncClient(first.url) as client:
        assert (await client.get_slot()).value >= 0


@pytest.mark.slow
async def test_kill_9_under_load_loses_no_acknowledged_transaction(
    ledger_node: Callable[..., LedgerNodeProcess],
) -> None:
    """Sends in flight from many tasks, ``kill -9`` after some answers: every answered
    transaction landed, and every transaction either landed whole or not at all."""
    node = ledger_node()
    payer = Keypair()
    count, tasks, kill_after = 400, 16, 60
    async with AsyncClient(node.url) as client:
        await client.request_airdrop(payer.pubkey(), 1000 * SOL)
        blockhash = (await client.get_latest_blockhash()).value.blockhash
    receivers = [Keypair().pubkey() for _ in range(count)]
    transactions = [
        sign(payer, [lamport_transfer(payer, receiver, SOL + i)], blockhash)
        for i, receiver in enumerate(receivers)
    ]
    acknowledged: set[int] = set()
    enough = asyncio.Event()
    pending = iter(range(count))

    async def sender(http: httpx.AsyncClient) -> None:
        for index in pending:
            body = base64.b64encode(bytes(transactions[index])).decode()
            try:
                answer = await http.post(
                    node.url,
                    json={
                        "jsonrpc": "2.0",
                        "id": index,
                        "method": "sendTransaction",
                        "params": [body, {"encoding": "base64"}],
                    },
                )
            except httpx.TransportError:
                return  # the node is gone
            assert "result" in answer.json(), answer.text
            acknowledged.add(index)
            if len(acknowledged) >= kill_after:
                enough.set()

    async with httpx.AsyncClient(timeout=60) as http:
        senders = [asyncio.create_task(sender(http)) for _ in range(tasks)]
        await enough.wait()
        node.kill()
        await asyncio.gather(*senders)
    assert kill_after <= len(acknowledged) < count

    node.start()
    async with AsyncClient(node.url) as client:
        landed = set()
        for start in range(0, count, 200):
            chunk = [tx.signatures[0] for tx in transactions[start : start + 200]]
            statuses = (
                await client.get_signature_statuses(chunk, search_transaction_history=True)
            ).value
            landed |= {start + i for i, status in enumerate(statuses) if status is not None}
        assert acknowledged <= landed
        balances = (await client.get_multiple_accounts(receivers[:100])).value
        for index, account in enumerate(balances):
            expected = SOL + index if index in landed else None
            assert (account.lamports if account else None) == expected, index
        payer_balance = (await client.get_balance(payer.pubkey())).value
        spent = sum(SOL + i + 5000 for i in landed)
        assert payer_balance == 1000 * SOL - spent


async def test_accounts_written_through_a_lookup_table_survive_a_restart(
    ledger_node: Callable[..., LedgerNodeProcess],
) -> None:
    # Settlement packs about ten trades in a v0 transaction whose token accounts come
    # from an address lookup table: those accounts are written without being among
    # the transaction's own keys, and must be kept all the same.
    node = ledger_node(tick_ms=50)
    authority = Keypair()
    buyers = [Keypair().pubkey() for _ in range(3)]
    async with AsyncClient(node.url) as client:
        await client.request_airdrop(authority.pubkey(), 10 * SOL)
        tokens = Tokens(client, authority)
        await tokens.create()
        await tokens.open_account(authority.pubkey())
        for buyer in buyers:
            await tokens.open_account(buyer)
        await tokens.mint_to(authority.pubkey(), 9_000)

        recent_slot = (await client.get_slot()).value
        create, table = create_lookup_table(
            {
                "authority_address": authority.pubkey(),
                "payer_address": authority.pubkey(),
                "recent_slot": recent_slot,
            }
        )
        await send(client, authority, [create])
        addresses = [tokens.account_of(buyer) for buyer in buyers]
        extend = extend_lookup_table(
            {
                "payer_address": authority.pubkey(),
                "lookup_table_address": table,
                "authority_address": authority.pubkey(),
                "new_addresses": addresses,
            }
        )
        await send(client, authority, [extend])
        extended_at = (await client.get_slot()).value

        async def next_slot() -> bool:
            return (await client.get_slot()).value > extended_at

        await until(next_slot, what="the slot after the extension")  # lookups need it
        blockhash = (await client.get_latest_blockhash()).value.blockhash
        transfers = [
            tokens.transfer_instruction(authority, buyer, 1_000 * (i + 1))
            for i, buyer in enumerate(buyers)
        ]
        message = MessageV0.try_compile(
            authority.pubkey(),
            transfers,
            [AddressLookupTableAccount(table, addresses)],
            blockhash,
        )
        assert message.address_table_lookups
        assert not set(addresses) & set(message.account_keys)
        await client.send_transaction(VersionedTransaction(message, [authority]))
        for i, buyer in enumerate(buyers):
            balance = await client.get_token_account_balance(tokens.account_of(buyer))
            assert balance.value.amount == str(1_000 * (i + 1))

    node.kill()
    node.start()
    async with AsyncClient(node.url) as client:
        for i, buyer in enumerate(buyers):
            balance = await client.get_token_account_balance(tokens.account_of(buyer))
            assert balance.value.amount == str(1_000 * (i + 1))
        source = await client.get_token_account_balance(tokens.account_of(authority.pubkey()))
        assert source.value.amount == "3000"
