"""The ledger node's state survives a clean stop and ``kill -9``: balances, signatures, blockhashes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.transaction_status import TransactionErrorFieldless

from cloud.tests.ledger_node_support import SOL, Tokens, lamport_transfer, sign
from gridclear.devtools.ledger import LedgerNodeProcess


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
        lamports_before = (await client.get_balance(payer.pubkey())).value

    if how == "kill -9":
        node.kill()
    else:
        assert node.stop() == 0
    node.start()

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
